//! `<TYPE>[/<CODE>]` as operators type it on the command line, and the families it means.

use icmp_guard_common::{FAMILY_V4, FAMILY_V6, icmp};

/// Which families a rule applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FamilyChoice {
    V4,
    V6,
    Both,
}

/// A `<TYPE>[/<CODE>]` argument that failed to parse; the message says how to fix it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("type {0} is out of range: ICMP types are 0-255")]
    TypeOutOfRange(String),
    #[error("code {0} is out of range: ICMP codes are 0-255")]
    CodeOutOfRange(String),
    #[error(
        "unknown ICMP type '{name}'{}: use a number 0-255 or a name such as echo-request",
        family.map(|f| format!(" for {}", icmp::family_label(f))).unwrap_or_default()
    )]
    UnknownName { name: String, family: Option<u8> },
    #[error(
        "numeric type {0} means different messages in v4 and v6: add --family v4 or --family v6"
    )]
    AmbiguousNumber(u8),
    #[error("empty type: give a number 0-255 or a name such as echo-request")]
    Empty,
}

/// A parsed `<TYPE>[/<CODE>]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleTarget {
    pub icmp_type: TypeSpec,
    pub code: Option<u8>,
}

/// A type as typed: a number or a name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TypeSpec {
    Number(u8),
    Name(String),
}

impl std::str::FromStr for RuleTarget {
    type Err = RuleError;

    fn from_str(text: &str) -> Result<Self, RuleError> {
        let (type_text, code_text) = match text.split_once('/') {
            Some((type_text, code_text)) => (type_text.trim(), Some(code_text.trim())),
            None => (text.trim(), None),
        };
        if type_text.is_empty() {
            return Err(RuleError::Empty);
        }
        let icmp_type = if type_text.bytes().all(|b| b.is_ascii_digit()) {
            TypeSpec::Number(
                type_text
                    .parse()
                    .map_err(|_| RuleError::TypeOutOfRange(type_text.to_owned()))?,
            )
        } else if type_text.starts_with('-') || type_text.starts_with('+') {
            return Err(RuleError::TypeOutOfRange(type_text.to_owned()));
        } else {
            TypeSpec::Name(type_text.to_owned())
        };
        let code = code_text
            .map(|code| {
                code.parse::<u8>()
                    .map_err(|_| RuleError::CodeOutOfRange(code.to_owned()))
            })
            .transpose()?;
        Ok(Self { icmp_type, code })
    }
}

impl RuleTarget {
    /// The (family, type) pairs this target names. A name applies to every family where it
    /// exists (unless `--family` narrows it); a number needs an explicit family.
    pub fn resolve(&self, family: Option<FamilyChoice>) -> Result<Vec<(u8, u8)>, RuleError> {
        let families: &[u8] = match family {
            Some(FamilyChoice::V4) => &[FAMILY_V4],
            Some(FamilyChoice::V6) => &[FAMILY_V6],
            Some(FamilyChoice::Both) | None => &[FAMILY_V4, FAMILY_V6],
        };
        match &self.icmp_type {
            TypeSpec::Number(number) => {
                if family.is_none() {
                    return Err(RuleError::AmbiguousNumber(*number));
                }
                Ok(families.iter().map(|f| (*f, *number)).collect())
            }
            TypeSpec::Name(name) => {
                let found: Vec<(u8, u8)> = families
                    .iter()
                    .filter_map(|f| icmp::type_by_name(*f, name).map(|t| (*f, t)))
                    .collect();
                // With an explicit single family the name must exist there.
                if found.is_empty()
                    || (matches!(family, Some(FamilyChoice::Both)) && found.len() != 2)
                {
                    return Err(RuleError::UnknownName {
                        name: name.clone(),
                        family: match family {
                            Some(FamilyChoice::V4) => Some(FAMILY_V4),
                            Some(FamilyChoice::V6) => Some(FAMILY_V6),
                            _ => None,
                        },
                    });
                }
                Ok(found)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(text: &str) -> Result<RuleTarget, RuleError> {
        text.parse()
    }

    #[test]
    fn names_apply_to_every_family_that_has_them() {
        let echo = target("echo-request").expect("valid");
        assert_eq!(
            echo.resolve(None),
            Ok(vec![(FAMILY_V4, 8), (FAMILY_V6, 128)])
        );
        assert_eq!(
            echo.resolve(Some(FamilyChoice::V6)),
            Ok(vec![(FAMILY_V6, 128)])
        );
        let ptb = target("packet-too-big").expect("valid");
        assert_eq!(ptb.resolve(None), Ok(vec![(FAMILY_V6, 2)]));
        assert!(matches!(
            ptb.resolve(Some(FamilyChoice::V4)),
            Err(RuleError::UnknownName { .. })
        ));
        assert!(matches!(
            ptb.resolve(Some(FamilyChoice::Both)),
            Err(RuleError::UnknownName { .. })
        ));
    }

    #[test]
    fn numbers_need_a_family() {
        let eight = target("8").expect("valid");
        assert_eq!(eight.resolve(None), Err(RuleError::AmbiguousNumber(8)));
        assert_eq!(
            eight.resolve(Some(FamilyChoice::V4)),
            Ok(vec![(FAMILY_V4, 8)])
        );
    }

    #[test]
    fn bad_input_is_refused_with_a_reason() {
        assert_eq!(
            target("256"),
            Err(RuleError::TypeOutOfRange("256".to_owned()))
        );
        assert_eq!(
            target("-1"),
            Err(RuleError::TypeOutOfRange("-1".to_owned()))
        );
        assert_eq!(
            target("3/300"),
            Err(RuleError::CodeOutOfRange("300".to_owned()))
        );
        assert_eq!(target(""), Err(RuleError::Empty));
        assert!(matches!(
            target("bogus").expect("parses as a name").resolve(None),
            Err(RuleError::UnknownName { .. })
        ));
        assert_eq!(
            RuleError::TypeOutOfRange("256".to_owned()).to_string(),
            "type 256 is out of range: ICMP types are 0-255"
        );
    }

    #[test]
    fn codes_parse() {
        assert_eq!(
            target("destination-unreachable/4"),
            Ok(RuleTarget {
                icmp_type: TypeSpec::Name("destination-unreachable".to_owned()),
                code: Some(4)
            })
        );
    }
}
