//! Agent attributes: `rack:r1;zone:a;level:3` — text, or scalar when the value
//! is a number.

use crate::resources::ResourceError;
use crate::v1;

/// Parses the Mesos text form of attributes.
pub fn parse_attributes(text: &str) -> Result<Vec<v1::Attribute>, ResourceError> {
    let mut out: Vec<v1::Attribute> = Vec::new();
    for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, value) = part
            .split_once(':')
            .ok_or_else(|| ResourceError::MissingValue(part.to_string()))?;
        let (name, value) = (name.trim(), value.trim());
        if name.is_empty() {
            return Err(ResourceError::EmptyName(part.to_string()));
        }
        if value.is_empty() {
            return Err(ResourceError::MissingValue(part.to_string()));
        }
        if out.iter().any(|a| a.name == name) {
            return Err(ResourceError::BadValue {
                text: part.to_string(),
                what: format!("attribute `{name}` is given twice"),
            });
        }
        let value = match value.parse::<f64>() {
            Ok(x) if x.is_finite() => v1::attribute::Value::Scalar(x),
            _ => v1::attribute::Value::Text(value.to_string()),
        };
        out.push(v1::Attribute {
            name: name.to_string(),
            value: Some(value),
        });
    }
    Ok(out)
}

/// The attribute's value as text (scalars without a trailing `.0`).
pub fn attribute_text(attr: &v1::Attribute) -> String {
    match &attr.value {
        Some(v1::attribute::Value::Text(t)) => t.clone(),
        Some(v1::attribute::Value::Scalar(x)) => format!("{x}"),
        None => String::new(),
    }
}

/// The Mesos text form of a list of attributes.
pub fn format_attributes(attrs: &[v1::Attribute]) -> String {
    attrs
        .iter()
        .map(|a| format!("{}:{}", a.name, attribute_text(a)))
        .collect::<Vec<_>>()
        .join(";")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_scalar_attributes() {
        let a = parse_attributes("rack:r1; zone:a;level:3").unwrap();
        assert_eq!(a.len(), 3);
        assert_eq!(a[2].value, Some(v1::attribute::Value::Scalar(3.0)));
        assert_eq!(format_attributes(&a), "rack:r1;zone:a;level:3");
        assert!(parse_attributes("rack").is_err());
        assert!(parse_attributes("rack:a;rack:b").is_err());
        assert!(parse_attributes("").unwrap().is_empty());
    }
}
