//! Checking Marathon constraints (`[field, OPERATOR, value?]`) when an app
//! is submitted. Placement itself is the framework kit's matcher.

/// Checks one constraint's form; `Err` says what is wrong.
pub fn parse_constraint(parts: &[String]) -> Result<(), String> {
    let (field, op, value) = match parts {
        [f, o] => (f, o, None),
        [f, o, v] => (f, o, Some(v.as_str())),
        _ => {
            return Err(format!(
                "a constraint is [field, OPERATOR] or [field, OPERATOR, value], not {} items",
                parts.len()
            ));
        }
    };
    if field.is_empty() {
        return Err("the constraint's field must not be empty".into());
    }
    let need_value = || {
        value
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("{op} needs a value"))
    };
    match op.as_str() {
        "UNIQUE" => Ok(()),
        "CLUSTER" => Ok(()),
        "GROUP_BY" => match value {
            None => Ok(()),
            Some(v) => v
                .parse::<u32>()
                .ok()
                .filter(|n| *n > 0)
                .map(|_| ())
                .ok_or_else(|| format!("GROUP_BY takes a positive number of groups, not '{v}'")),
        },
        "MAX_PER" => {
            let v = need_value()?;
            v.parse::<u32>()
                .ok()
                .filter(|n| *n > 0)
                .map(|_| ())
                .ok_or_else(|| format!("MAX_PER takes a positive number, not '{v}'"))
        }
        "LIKE" | "UNLIKE" => {
            let v = need_value()?;
            regex::Regex::new(&format!("^(?:{v})$"))
                .map(|_| ())
                .map_err(|e| format!("'{v}' is not a valid regular expression: {e}"))
        }
        "IS" => need_value().map(|_| ()),
        other => Err(format!(
            "operator '{other}' is not one of UNIQUE, CLUSTER, GROUP_BY, LIKE, UNLIKE, MAX_PER, IS"
        )),
    }
}
