//! `<TYPE>[/<CODE>]` as operators type it on the command line, and the families it means.
//! A code is a number or a name as nft or iptables spell it ([`super::names`]):
//! `destination-unreachable/frag-needed`; and a code name alone means its type and code, as
//! in iptables' `--icmp-type fragmentation-needed`.

use icmp_guard_common::{FAMILY_V4, FAMILY_V6, icmp};

use super::names;

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
    #[error("unknown code '{code}' for {what}{}", if known.is_empty() {
        ": this type has no named codes, use a number 0-255".to_owned()
    } else {
        format!(": use a number 0-255 or {known}")
    })]
    UnknownCode {
        code: String,
        /// "v4 destination-unreachable".
        what: String,
        /// The names it has, "a, b or c".
        known: String,
    },
}

/// A parsed `<TYPE>[/<CODE>]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleTarget {
    pub icmp_type: TypeSpec,
    pub code: Option<CodeSpec>,
}

/// A code as typed: a number or a name, which may mean different numbers in v4 and v6.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CodeSpec {
    Number(u8),
    Name(String),
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
                if code.is_empty()
                    || code.bytes().all(|b| b.is_ascii_digit())
                    || code.starts_with(['-', '+'])
                {
                    code.parse::<u8>()
                        .map(CodeSpec::Number)
                        .map_err(|_| RuleError::CodeOutOfRange(code.to_owned()))
                } else {
                    Ok(CodeSpec::Name(code.to_owned()))
                }
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

    /// The (family, type, code) rules this target names: [`Self::resolve`] for the types,
    /// then the code in each family. A code name applies in every family whose type has it
    /// (unless `--family` names one that lacks it: refused); a code name alone, as iptables
    /// takes it, means its own type.
    pub fn resolve_rules(
        &self,
        family: Option<FamilyChoice>,
    ) -> Result<Vec<(u8, u8, Option<u8>)>, RuleError> {
        let families: &[u8] = match family {
            Some(FamilyChoice::V4) => &[FAMILY_V4],
            Some(FamilyChoice::V6) => &[FAMILY_V6],
            Some(FamilyChoice::Both) | None => &[FAMILY_V4, FAMILY_V6],
        };
        if let (TypeSpec::Name(name), None) = (&self.icmp_type, &self.code)
            && families
                .iter()
                .all(|&f| icmp::type_by_name(f, name).is_none())
        {
            let found: Vec<(u8, u8, Option<u8>)> = families
                .iter()
                .filter_map(|&f| {
                    names::type_and_code_by_name(f, name).map(|(t, c)| (f, t, Some(c)))
                })
                .collect();
            let complete = found.len() == families.len() || family.is_none();
            if !found.is_empty() && complete {
                return Ok(found);
            }
        }
        let types = self.resolve(family)?;
        let code = match &self.code {
            None => return Ok(types.into_iter().map(|(f, t)| (f, t, None)).collect()),
            Some(CodeSpec::Number(code)) => {
                return Ok(types
                    .into_iter()
                    .map(|(f, t)| (f, t, Some(*code)))
                    .collect());
            }
            Some(CodeSpec::Name(code)) => code,
        };
        let mut rules = Vec::new();
        let mut missing = None;
        for (f, t) in types {
            match names::code_by_name(f, t, code) {
                Some(number) => rules.push((f, t, Some(number))),
                None => missing = missing.or(Some((f, t))),
            }
        }
        match missing {
            // Without --family a name applies where it exists, as type names do.
            Some(_) if family.is_none() && !rules.is_empty() => Ok(rules),
            Some((f, t)) => Err(RuleError::UnknownCode {
                code: code.clone(),
                what: format!(
                    "{} {}",
                    icmp::family_label(f),
                    icmp::type_name(f, t).map_or_else(|| format!("type {t}"), str::to_owned)
                ),
                known: names::code_list(f, t),
            }),
            None => Ok(rules),
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
                code: Some(CodeSpec::Number(4))
            })
        );
        assert_eq!(
            target("destination-unreachable/frag-needed").map(|t| t.code),
            Ok(Some(CodeSpec::Name("frag-needed".to_owned())))
        );
        assert_eq!(
            target("3/-1"),
            Err(RuleError::CodeOutOfRange("-1".to_owned()))
        );
        assert_eq!(target("3/"), Err(RuleError::CodeOutOfRange(String::new())));
    }

    fn rules(
        text: &str,
        family: Option<FamilyChoice>,
    ) -> Result<Vec<(u8, u8, Option<u8>)>, RuleError> {
        target(text).expect("parses").resolve_rules(family)
    }

    #[test]
    fn code_names_as_nft_spells_them() {
        assert_eq!(
            rules("destination-unreachable/frag-needed", None),
            Ok(vec![(FAMILY_V4, 3, Some(4))]),
            "frag-needed exists in v4 only"
        );
        assert_eq!(
            rules("destination-unreachable/admin-prohibited", None),
            Ok(vec![(FAMILY_V4, 3, Some(13)), (FAMILY_V6, 1, Some(1))]),
            "one name, the matching code of each family"
        );
        assert_eq!(
            rules("dest-unreachable/port-unreachable", Some(FamilyChoice::V6)),
            Ok(vec![(FAMILY_V6, 1, Some(4))])
        );
        assert_eq!(
            rules("3/fragmentation-needed", Some(FamilyChoice::V4)),
            Ok(vec![(FAMILY_V4, 3, Some(4))])
        );
        assert_eq!(
            rules("time-exceeded/ttl-zero-during-reassembly", None),
            Ok(vec![(FAMILY_V4, 11, Some(1)), (FAMILY_V6, 3, Some(1))])
        );
        let err = rules(
            "destination-unreachable/frag-needed",
            Some(FamilyChoice::V6),
        )
        .expect_err("no frag-needed in v6");
        assert!(
            err.to_string().starts_with(
                "unknown code 'frag-needed' for v6 destination-unreachable: use a number 0-255 or no-route, "
            ),
            "{err}"
        );
        let err = rules(
            "destination-unreachable/frag-needed",
            Some(FamilyChoice::Both),
        )
        .expect_err("both families asked for");
        assert!(err.to_string().contains("for v6"), "{err}");
        let err = rules("echo-request/frag-needed", None).expect_err("echo has no named codes");
        assert!(err.to_string().contains("no named codes"), "{err}");
        assert!(matches!(
            rules("destination-unreachable/bogus", None),
            Err(RuleError::UnknownCode { .. })
        ));
    }

    #[test]
    fn a_code_name_alone_means_its_type_as_in_iptables() {
        assert_eq!(
            rules("fragmentation-needed", None),
            Ok(vec![(FAMILY_V4, 3, Some(4))])
        );
        assert_eq!(
            rules("port-unreachable", None),
            Ok(vec![(FAMILY_V4, 3, Some(3)), (FAMILY_V6, 1, Some(4))])
        );
        assert_eq!(
            rules("no-route", Some(FamilyChoice::V6)),
            Ok(vec![(FAMILY_V6, 1, Some(0))])
        );
        assert!(matches!(
            rules("frag-needed", Some(FamilyChoice::V6)),
            Err(RuleError::UnknownName { .. })
        ));
        assert_eq!(
            rules("echo-request", None),
            Ok(vec![(FAMILY_V4, 8, None), (FAMILY_V6, 128, None)]),
            "type names stay type names"
        );
    }
}
