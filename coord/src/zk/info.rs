//! MasterInfo as JSON, in the layout Mesos writes to ZooKeeper:
//!
//! ```json
//! {"address":{"hostname":"m1","ip":"10.0.0.1","port":5050},"hostname":"m1",
//!  "id":"<uuid>","ip":16777226,"pid":"master@10.0.0.1:5050","port":5050,
//!  "version":"0.1.0"}
//! ```
//!
//! `ip` is the IPv4 address as a u32 in network byte order (what Mesos keeps
//! in memory, read as a little-endian number). Readers use `address.ip` and
//! `address.port`, falling back to the top-level fields.

use std::net::{IpAddr, Ipv4Addr};

use agora_proto::v1::MasterInfo;
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Serialize, Deserialize)]
struct AddressJson {
    #[serde(default)]
    hostname: String,
    #[serde(default)]
    ip: String,
    #[serde(default)]
    port: u32,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct MasterInfoJson {
    #[serde(default)]
    address: AddressJson,
    #[serde(default)]
    hostname: String,
    #[serde(default)]
    id: String,
    #[serde(default)]
    ip: u32,
    #[serde(default)]
    pid: String,
    #[serde(default)]
    port: u32,
    #[serde(default)]
    version: String,
}

/// `ip` as Mesos stores it: the address's bytes in network order, read as a
/// little-endian u32 (127.0.0.1 is 16777343). 0 for anything but IPv4.
fn ip_number(ip: &str) -> u32 {
    match ip.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => u32::from_le_bytes(v4.octets()),
        _ => 0,
    }
}

/// The node data a master writes.
pub fn master_info_to_json(info: &MasterInfo) -> Vec<u8> {
    let json = MasterInfoJson {
        address: AddressJson {
            hostname: info.hostname.clone(),
            ip: info.ip.clone(),
            port: info.port,
        },
        hostname: info.hostname.clone(),
        id: info.id.clone(),
        ip: ip_number(&info.ip),
        pid: format!("master@{}:{}", info.ip, info.port),
        port: info.port,
        version: info.version.clone(),
    };
    serde_json::to_vec(&json).expect("MasterInfo serializes")
}

/// Reads a master's node data (ours, or Mesos's).
pub fn master_info_from_json(data: &[u8]) -> Result<MasterInfo, String> {
    let json: MasterInfoJson =
        serde_json::from_slice(data).map_err(|e| format!("not MasterInfo JSON: {e}"))?;
    let ip = if !json.address.ip.is_empty() {
        json.address.ip
    } else if json.ip != 0 {
        Ipv4Addr::from(json.ip.to_le_bytes()).to_string()
    } else {
        String::new()
    };
    let port = if json.address.port != 0 {
        json.address.port
    } else {
        json.port
    };
    let hostname = if !json.address.hostname.is_empty() {
        json.address.hostname
    } else {
        json.hostname
    };
    if port == 0 || port > u16::MAX as u32 {
        return Err(format!("no valid port in MasterInfo (got {port})"));
    }
    if ip.is_empty() && hostname.is_empty() {
        return Err("no address in MasterInfo (neither address.ip nor hostname)".into());
    }
    Ok(MasterInfo {
        id: json.id,
        hostname,
        ip,
        port,
        version: json.version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_matches_the_mesos_layout() {
        let info = MasterInfo {
            id: "abc".into(),
            hostname: "m1".into(),
            ip: "127.0.0.1".into(),
            port: 5050,
            version: "0.1.0".into(),
        };
        let data = master_info_to_json(&info);
        let v: serde_json::Value = serde_json::from_slice(&data).unwrap();
        assert_eq!(v["ip"], 16777343);
        assert_eq!(v["address"]["ip"], "127.0.0.1");
        assert_eq!(v["address"]["port"], 5050);
        assert_eq!(v["address"]["hostname"], "m1");
        assert_eq!(v["pid"], "master@127.0.0.1:5050");
        assert_eq!(master_info_from_json(&data).unwrap(), info);
    }

    #[test]
    fn reads_what_mesos_writes() {
        let mesos = br#"{"address":{"hostname":"m2","ip":"10.0.0.2","port":5050},
            "hostname":"m2","id":"x","ip":33554442,"pid":"master@10.0.0.2:5050",
            "port":5050,"version":"1.11.0","capabilities":[{"type":"AGENT_UPDATE"}]}"#;
        let info = master_info_from_json(mesos).unwrap();
        assert_eq!((info.ip.as_str(), info.port), ("10.0.0.2", 5050));
        // Only the top-level fields.
        let old = br#"{"id":"y","ip":33554442,"port":5051,"hostname":"m2"}"#;
        let info = master_info_from_json(old).unwrap();
        assert_eq!((info.ip.as_str(), info.port), ("10.0.0.2", 5051));
    }

    #[test]
    fn refuses_what_names_no_master() {
        assert!(master_info_from_json(b"not json").is_err());
        assert!(master_info_from_json(br#"{"id":"x"}"#).is_err());
        assert!(master_info_from_json(br#"{"address":{"ip":"1.2.3.4","port":70000}}"#).is_err());
    }
}
