//! Label selectors: matching, and the checks Kubernetes' API server makes
//! on label keys and values.

use super::model::{Labels, Operator, Requirement, Selector};

impl Requirement {
    /// Whether the requirement holds for a label value (`None`: no such
    /// label). As Kubernetes: `NotIn` and `DoesNotExist` hold for a pod
    /// without the label.
    pub fn holds(&self, value: Option<&str>) -> bool {
        match (self.operator, value) {
            (Operator::In, Some(v)) => self.values.iter().any(|x| x == v),
            (Operator::In, None) => false,
            (Operator::NotIn, Some(v)) => !self.values.iter().any(|x| x == v),
            (Operator::NotIn, None) => true,
            (Operator::Exists, v) => v.is_some(),
            (Operator::DoesNotExist, v) => v.is_none(),
        }
    }
}

impl Selector {
    /// Whether labels read through `get` match: every `matchLabels` pair
    /// and every requirement (AND); the empty selector matches all.
    pub fn matches_by<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| get(k) == Some(v.as_str()))
            && self.match_expressions.iter().all(|r| r.holds(get(&r.key)))
    }

    /// Whether Kubernetes labels match (a NetworkPolicy's selectors).
    pub fn matches(&self, labels: &Labels) -> bool {
        self.matches_by(|k| labels.get(k).map(String::as_str))
    }
}

/// Checks a label key as Kubernetes does: an optional DNS-subdomain prefix
/// and `/`, then a name of 1-63 characters (letters, digits, `-`, `_`,
/// `.`, starting and ending with a letter or digit). The error is the
/// reason, to follow "`KEY` is not a valid label key: ".
pub fn check_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        check_subdomain(p).map_err(|e| format!("its prefix {e}"))?;
    }
    check_name(name)
}

/// A label value: empty, or 1-63 characters as a key's name part.
pub fn check_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    check_name(value)
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 63 {
        return Err("a name must be 1 to 63 characters".into());
    }
    let ok_inner = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let ends = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !name.chars().all(ok_inner) || !ends(name.chars().next()) || !ends(name.chars().last()) {
        return Err(
            "use letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
                .into(),
        );
    }
    Ok(())
}

/// A DNS subdomain (RFC 1123): at most 253 characters, lowercase labels of
/// letters, digits and `-` joined by dots.
pub fn check_subdomain(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 253 {
        return Err("must be 1 to 253 characters".into());
    }
    if s.split('.').all(|l| check_dns_label(l).is_ok()) {
        Ok(())
    } else {
        Err("must be lowercase letters, digits, '-' and '.', each part starting and ending with a letter or digit".into())
    }
}

/// A DNS label (RFC 1123): 1-63 lowercase letters, digits and `-`,
/// starting and ending with a letter or digit (a namespace's name).
pub fn check_dns_label(s: &str) -> Result<(), String> {
    let ok = (1..=63).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err("must be 1 to 63 lowercase letters, digits or '-', starting and ending with a letter or digit".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn req(key: &str, operator: Operator, values: &[&str]) -> Requirement {
        Requirement {
            key: key.into(),
            operator,
            values: values.iter().map(|v| (*v).to_owned()).collect(),
        }
    }

    #[test]
    fn match_labels_and_expressions_are_all_required() {
        let ds = labels(&[("org", "empire"), ("class", "deathstar")]);
        let tf = labels(&[("org", "empire"), ("class", "tiefighter")]);
        let xw = labels(&[("org", "alliance"), ("class", "xwing")]);
        let bare = labels(&[]);
        let all = Selector::default();
        assert!([&ds, &tf, &xw, &bare].iter().all(|l| all.matches(l)));

        let empire = Selector {
            match_labels: labels(&[("org", "empire")]),
            ..Selector::default()
        };
        assert_eq!(
            [&ds, &tf, &xw, &bare].map(|l| empire.matches(l)),
            [true, true, false, false]
        );
        // Two pairs: AND.
        let deathstar = Selector {
            match_labels: labels(&[("org", "empire"), ("class", "deathstar")]),
            ..Selector::default()
        };
        assert_eq!(
            [&ds, &tf, &xw, &bare].map(|l| deathstar.matches(l)),
            [true, false, false, false]
        );
        // A pair and an expression: AND too.
        let empire_not_ds = Selector {
            match_labels: labels(&[("org", "empire")]),
            match_expressions: vec![req("class", Operator::NotIn, &["deathstar"])],
        };
        assert_eq!(
            [&ds, &tf, &xw, &bare].map(|l| empire_not_ds.matches(l)),
            [false, true, false, false]
        );
    }

    #[test]
    fn each_operator_as_kubernetes_defines_it() {
        let ds = labels(&[("org", "empire"), ("class", "deathstar")]);
        let xw = labels(&[("org", "alliance"), ("class", "xwing")]);
        let bare = labels(&[("app", "dns")]);
        let sel = |r: Requirement| Selector {
            match_expressions: vec![r],
            ..Selector::default()
        };
        let cases = [
            (
                req("class", Operator::In, &["deathstar", "xwing"]),
                [true, true, false],
            ),
            (
                req("class", Operator::In, &["tiefighter"]),
                [false, false, false],
            ),
            // NotIn holds for pods without the label.
            (
                req("org", Operator::NotIn, &["empire"]),
                [false, true, true],
            ),
            (req("org", Operator::Exists, &[]), [true, true, false]),
            (
                req("org", Operator::DoesNotExist, &[]),
                [false, false, true],
            ),
        ];
        for (r, want) in cases {
            let s = sel(r.clone());
            assert_eq!([&ds, &xw, &bare].map(|l| s.matches(l)), want, "{r:?}");
        }
    }

    #[test]
    fn keys_and_values_are_checked_as_the_api_server_does() {
        for good in ["app", "k8s-app", "app.kubernetes.io/name", "a_b.c", "x"] {
            assert_eq!(check_key(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "-app",
            "app-",
            "a b",
            "Upper.Case/x",
            "x/",
            &"a".repeat(64),
        ] {
            assert!(check_key(bad).is_err(), "{bad}");
        }
        assert_eq!(check_value(""), Ok(()));
        assert_eq!(check_value("v1.2_3"), Ok(()));
        assert!(check_value("not ok").is_err());
        assert!(check_value(&"v".repeat(64)).is_err());
        assert_eq!(check_dns_label("kube-system"), Ok(()));
        assert!(check_dns_label("Kube").is_err());
        assert_eq!(check_subdomain("allow.dns-1"), Ok(()));
        assert!(check_subdomain("a..b").is_err());
    }
}
