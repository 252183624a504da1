//! MQTT 3.1.1 topic filters (section 4.7): `+` matches one level, `#` the
//! rest (including the parent level), and a topic beginning with `$` (such
//! as IoT's reserved `$aws/...` topics) is not matched by a filter whose
//! first level is a wildcard (4.7.2). rumqttc's `matches` matches no `$`
//! topic at all, which would make IoT's reserved topics undeliverable.

/// Whether `topic` matches `filter`.
pub fn matches(topic: &str, filter: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut levels = topic.split('/');
    for f in filter.split('/') {
        if f == "#" {
            return true;
        }
        match levels.next() {
            Some(_) if f == "+" => {}
            Some(level) if level == f => {}
            _ => return false,
        }
    }
    levels.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::matches;
    use proptest::prelude::*;

    #[test]
    fn wildcards_match_levels_as_the_specification_says() {
        assert!(matches("devices/SN-1/hello", "devices/+/hello"));
        assert!(matches("devices/SN-1/hello", "devices/#"));
        assert!(matches("devices", "devices/#"));
        assert!(!matches("devices/SN-1/hello", "devices/+"));
        assert!(!matches("devices/SN-1", "devices/SN-1/hello"));
        assert!(matches(
            "$aws/events/presence/connected/SN-1",
            "$aws/events/presence/+/+"
        ));
        assert!(matches(
            "$aws/certificates/create/json/accepted",
            "$aws/certificates/create/json/accepted"
        ));
        assert!(!matches("$aws/events/presence/connected/SN-1", "#"));
        assert!(!matches(
            "$aws/events/presence/connected/SN-1",
            "+/events/#"
        ));
    }

    proptest! {
        #[test]
        fn a_topic_matches_itself_and_hash_matches_every_plain_topic(topic in "[a-z]{1,4}(/[a-z]{1,4}){0,4}") {
            prop_assert!(matches(&topic, &topic));
            prop_assert!(matches(&topic, "#"));
            let plus: Vec<&str> = topic.split('/').map(|_| "+").collect();
            prop_assert!(matches(&topic, &plus.join("/")));
        }
    }
}
