//! The factory manifest: JSON Lines, one device profile per line.

use std::collections::HashMap;

use geoprov_shared::device::{DeviceProfile, reserved_serial, thing_group_refused};

/// A line that is not a valid device profile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {field}: {message}")]
pub struct ManifestError {
    pub line: usize,
    /// The field at fault, or `(line)` when the line as a whole is.
    pub field: String,
    pub message: String,
}

/// The valid profiles of a manifest, and an error for each invalid line.
#[derive(Debug, Default)]
pub struct Manifest {
    pub profiles: Vec<DeviceProfile>,
    pub errors: Vec<ManifestError>,
}

/// What a manifest may not name: serials that start with the provisioning
/// client-id prefix (and the region canaries'), and thing groups without
/// the stack's prefix.
#[derive(Debug, Clone, Copy)]
pub struct Reserved<'a> {
    pub client_id_prefix: &'a str,
    pub thing_group_prefix: &'a str,
}

impl Default for Reserved<'_> {
    fn default() -> Self {
        Reserved {
            client_id_prefix: geoprov_shared::config::DEFAULT_CLIENT_ID_PREFIX,
            thing_group_prefix: geoprov_shared::device::DEFAULT_THING_GROUP_PREFIX,
        }
    }
}

/// Parses a whole manifest. Blank lines are skipped; a serial that appears
/// twice is an error on its second line, and so is a reserved serial
/// ([`reserved_serial`]: a region canary's, or one that starts with the
/// client-id prefix) and a thing group without the stack's prefix
/// ([`thing_group_refused`]).
pub fn parse(text: &str, reserved: Reserved<'_>) -> Manifest {
    let mut manifest = Manifest::default();
    let mut first_line_of: HashMap<String, usize> = HashMap::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        if raw.trim().is_empty() {
            continue;
        }
        match parse_line(raw, line) {
            Ok(profile) => {
                let serial = profile.serial_number.to_string();
                let group_refused = profile
                    .thing_group
                    .as_ref()
                    .and_then(|g| thing_group_refused(g.as_str(), reserved.thing_group_prefix));
                if let Some(why) = reserved_serial(&serial, reserved.client_id_prefix) {
                    manifest.errors.push(ManifestError {
                        line,
                        field: "serialNumber".into(),
                        message: why,
                    });
                } else if let Some(why) = group_refused {
                    manifest.errors.push(ManifestError {
                        line,
                        field: "thingGroup".into(),
                        message: why,
                    });
                } else if let Some(first) = first_line_of.get(&serial) {
                    manifest.errors.push(ManifestError {
                        line,
                        field: "serialNumber".into(),
                        message: format!("{serial} is already on line {first}"),
                    });
                } else {
                    first_line_of.insert(serial, line);
                    manifest.profiles.push(profile);
                }
            }
            Err(e) => manifest.errors.push(e),
        }
    }
    manifest
}

/// One line: every field checked, unknown fields refused (a typo must not
/// silently drop a restriction such as `allowedRegions`).
pub fn parse_line(raw: &str, line: usize) -> Result<DeviceProfile, ManifestError> {
    let mut json = serde_json::Deserializer::from_str(raw);
    let mut track = serde_path_to_error::Track::new();
    let mut unknown = Vec::new();
    let parsed: Result<DeviceProfile, _> = serde_ignored::deserialize(
        serde_path_to_error::Deserializer::new(&mut json, &mut track),
        |path| unknown.push(path.to_string()),
    );
    let profile = parsed.map_err(|e| {
        let path = track.path().to_string();
        let field = if path == "." {
            missing_field(&e.to_string()).unwrap_or_else(|| "(line)".into())
        } else {
            path
        };
        ManifestError {
            line,
            field,
            message: strip_position(&e.to_string()),
        }
    })?;
    json.end().map_err(|e| ManifestError {
        line,
        field: "(line)".into(),
        message: strip_position(&e.to_string()),
    })?;
    if let Some(field) = unknown.into_iter().next() {
        return Err(ManifestError {
            line,
            field,
            message: "unknown field".into(),
        });
    }
    if profile.version.is_some() {
        return Err(ManifestError {
            line,
            field: "version".into(),
            message: "is set by the registry on every import, not by the manifest".into(),
        });
    }
    Ok(profile)
}

/// serde reports a missing field at the root; name the field itself.
fn missing_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("missing field `")?;
    Some(rest[..rest.find('`')?].to_owned())
}

/// serde_json appends " at line 1 column N", which is about the line's
/// JSON, not the manifest's line numbers; drop it.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(idx) => message[..idx].to_owned(),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use geoprov_shared::device::DeviceStatus;

    #[test]
    fn parses_a_full_line() {
        let m = parse(
            r#"{"serialNumber":"SN-1","status":"ALLOWED","allowedRegions":["eu-west-1"],"maxProvisions":2,"publicKeySha256":"ABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABAB","thingGroup":"geoprov-sensors-eu","attributes":{"model":"X1"}}"#,
            Reserved::default(),
        );
        assert!(m.errors.is_empty(), "{:?}", m.errors);
        let p = &m.profiles[0];
        assert_eq!(p.serial_number.as_str(), "SN-1");
        assert_eq!(p.max_provisions, Some(2));
        assert_eq!(
            p.public_key_sha256.as_ref().unwrap().as_str(),
            "ab".repeat(32)
        );
    }

    #[test]
    fn names_the_line_and_the_field_of_each_bad_line() {
        let text = [
            r#"{"serialNumber":"SN-1"}"#,
            r#"{"serialNumber":"SN 2"}"#,
            r#"{"serialNumber":"SN-3","maxProvisions":"two"}"#,
            "",
            r#"{"serialNumber":"SN-4","allowedRegions":["mars"]}"#,
            r#"{"serialNumber":"SN-5","status":"LOST"}"#,
            r#"{"serialNumber":"SN-6","allowedRegion":["eu-west-1"]}"#,
            r#"{"status":"ALLOWED"}"#,
            r#"{"serialNumber":"SN-1"}"#,
            r#"not json"#,
            r#"{"serialNumber":"SN-9"} trailing"#,
            r#"{"serialNumber":"SN-10","publicKeySha256":"abc"}"#,
        ]
        .join("\n");
        let m = parse(&text, Reserved::default());
        assert_eq!(m.profiles.len(), 1);
        let got: Vec<(usize, &str)> = m
            .errors
            .iter()
            .map(|e| (e.line, e.field.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (2, "serialNumber"),
                (3, "maxProvisions"),
                (5, "allowedRegions[0]"),
                (6, "status"),
                (7, "allowedRegion"),
                (8, "serialNumber"),
                (9, "serialNumber"),
                (10, "(line)"),
                (11, "(line)"),
                (12, "publicKeySha256"),
            ]
        );
        assert!(m.errors[6].message.contains("line 1"), "{}", m.errors[6]);
    }

    #[test]
    fn status_defaults_to_allowed() {
        let m = parse(r#"{"serialNumber":"SN-1"}"#, Reserved::default());
        assert_eq!(m.profiles[0].status, DeviceStatus::Allowed);
    }

    /// A manifest cannot take over the canary's serial (any region's), nor
    /// name a serial the claim key could connect as.
    #[test]
    fn reserved_serials_are_refused_by_line() {
        let text = [
            r#"{"serialNumber":"geoprov-canary-eu-west-1-probe","allowedRegions":["eu-west-1","us-east-1"]}"#,
            r#"{"serialNumber":"GEOPROV-CANARY-us-east-1-PROBE"}"#,
            r#"{"serialNumber":"prov-SN-1"}"#,
            r#"{"serialNumber":"SN-1"}"#,
            r#"{"serialNumber":"provision-SN-2"}"#,
        ]
        .join("\n");
        let m = parse(&text, Reserved::default());
        let lines: Vec<usize> = m.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [1, 2, 3], "{:?}", m.errors);
        assert!(
            m.errors[0].message.contains("region canary"),
            "{}",
            m.errors[0]
        );
        assert!(
            m.errors[2].message.contains("client-id prefix"),
            "{}",
            m.errors[2]
        );
        let kept: Vec<&str> = m
            .profiles
            .iter()
            .map(|p| p.serial_number.as_str())
            .collect();
        assert_eq!(kept, ["SN-1", "provision-SN-2"]);
        // Another prefix reserves other serials.
        let other = Reserved {
            client_id_prefix: "claim:",
            ..Reserved::default()
        };
        assert!(
            parse(r#"{"serialNumber":"prov-SN-1"}"#, other)
                .errors
                .is_empty()
        );
    }

    /// A device inherits its thing group's policies: a manifest names only
    /// the stack's groups.
    #[test]
    fn a_thing_group_without_the_stack_prefix_is_refused() {
        let text = [
            r#"{"serialNumber":"SN-1","thingGroup":"geoprov-sensors-eu"}"#,
            r#"{"serialNumber":"SN-2","thingGroup":"fleet-admins"}"#,
            r#"{"serialNumber":"SN-3"}"#,
        ]
        .join("\n");
        let m = parse(&text, Reserved::default());
        let got: Vec<(usize, &str)> = m
            .errors
            .iter()
            .map(|e| (e.line, e.field.as_str()))
            .collect();
        assert_eq!(got, [(2, "thingGroup")], "{:?}", m.errors);
        assert_eq!(m.profiles.len(), 2);
    }
}
