//! Label and field selectors (pure), with the grammar of k8s.io/apimachinery/pkg/labels and
//! pkg/fields:
//!
//! - labels: `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a` (exists), `!a`;
//!   requirements joined by commas, all must hold;
//! - fields: `path=value`, `path==value`, `path!=value`, joined by commas. The path is a dotted
//!   path into the object (`metadata.name`, `spec.nodeName`, `status.phase`,
//!   `involvedObject.uid`...); a missing field compares as the empty string, as upstream's
//!   field sets do for unset strings.

use serde_json::Value;

/// A selector string that does not parse. The message names the offending part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unable to parse requirement: {0}")]
pub struct SelectorError(pub String);

#[derive(Debug, Clone, PartialEq, Eq)]
enum LabelOp {
    Eq(String),
    NotEq(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    NotExists,
}

/// A parsed label selector; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    reqs: Vec<(String, LabelOp)>,
}

/// A parsed field selector; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    reqs: Vec<(String, bool, String)>,
}

/// Split on commas that are not inside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 316
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

fn valid_value(v: &str) -> bool {
    v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn parse_set(s: &str, whole: &str) -> Result<Vec<String>, SelectorError> {
    let inner = s
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| SelectorError(format!("{whole:?}: expected a set in parentheses")))?;
    let vals: Vec<String> = inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect();
    if let Some(bad) = vals.iter().find(|v| !valid_value(v)) {
        return Err(SelectorError(format!(
            "{whole:?}: invalid label value {bad:?}"
        )));
    }
    Ok(vals)
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<LabelSelector, SelectorError> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(LabelSelector { reqs });
        }
        for part in split_top(s) {
            let p = part.trim();
            let bad = |why: &str| SelectorError(format!("{p:?}: {why}"));
            let (key, op) = if let Some(k) = p.strip_prefix('!') {
                (k.trim().to_string(), LabelOp::NotExists)
            } else if let Some((k, v)) = p.split_once("!=") {
                (k.trim().to_string(), LabelOp::NotEq(v.trim().to_string()))
            } else if let Some((k, v)) = p.split_once("==") {
                (k.trim().to_string(), LabelOp::Eq(v.trim().to_string()))
            } else if let Some((k, v)) = p.split_once('=') {
                (k.trim().to_string(), LabelOp::Eq(v.trim().to_string()))
            } else if let Some((k, rest)) = p.split_once(" notin ") {
                (k.trim().to_string(), LabelOp::NotIn(parse_set(rest, p)?))
            } else if let Some((k, rest)) = p.split_once(" in ") {
                (k.trim().to_string(), LabelOp::In(parse_set(rest, p)?))
            } else {
                (p.to_string(), LabelOp::Exists)
            };
            if !valid_key(&key) {
                return Err(bad("invalid label key"));
            }
            if let LabelOp::Eq(v) | LabelOp::NotEq(v) = &op {
                if !valid_value(v) {
                    return Err(bad("invalid label value"));
                }
            }
            reqs.push((key, op));
        }
        Ok(LabelSelector { reqs })
    }

    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    /// Whether an object (its `metadata.labels`) satisfies every requirement.
    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels");
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.reqs.iter().all(|(k, op)| match op {
            LabelOp::Eq(v) => get(k) == Some(v.as_str()),
            LabelOp::NotEq(v) => get(k) != Some(v.as_str()),
            LabelOp::In(vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            LabelOp::NotIn(vs) => !get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            LabelOp::Exists => get(k).is_some(),
            LabelOp::NotExists => get(k).is_none(),
        })
    }
}

/// The string value of a dotted field path; numbers and bools in their JSON text.
pub fn field_value(obj: &Value, path: &str) -> String {
    let mut cur = obj;
    for seg in path.split('.') {
        match cur.get(seg) {
            Some(v) => cur = v,
            None => return String::new(),
        }
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

impl FieldSelector {
    pub fn parse(s: &str) -> Result<FieldSelector, SelectorError> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(FieldSelector { reqs });
        }
        for part in s.split(',') {
            let p = part.trim();
            let (k, eq, v) = if let Some((k, v)) = p.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = p.split_once("==") {
                (k, true, v)
            } else if let Some((k, v)) = p.split_once('=') {
                (k, true, v)
            } else {
                return Err(SelectorError(format!(
                    "{p:?}: field selectors need an operator (=, ==, !=)"
                )));
            };
            let k = k.trim();
            if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '.') {
                return Err(SelectorError(format!("{p:?}: invalid field path {k:?}")));
            }
            reqs.push((k.to_string(), eq, v.trim().to_string()));
        }
        Ok(FieldSelector { reqs })
    }

    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    /// The same selector with each field path rewritten by `f` (for an API whose objects are
    /// stored in another version's shape).
    pub fn map_fields(self, f: impl Fn(&str) -> String) -> FieldSelector {
        FieldSelector {
            reqs: self
                .reqs
                .into_iter()
                .map(|(k, eq, v)| (f(&k), eq, v))
                .collect(),
        }
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.reqs
            .iter()
            .all(|(k, eq, v)| (field_value(obj, k) == *v) == *eq)
    }

    /// The value required for `path` by an `=` requirement, if any (used to narrow a list to
    /// one namespace or one object).
    pub fn required(&self, path: &str) -> Option<&str> {
        self.reqs
            .iter()
            .find(|(k, eq, _)| k == path && *eq)
            .map(|(_, _, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(labels: Value) -> Value {
        json!({"metadata": {"name": "p", "namespace": "default", "labels": labels},
               "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}})
    }

    #[test]
    fn label_selector_table() {
        let obj = pod(json!({"app": "web", "tier": "front"}));
        let cases = [
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app=db", false),
            ("app in (web, db)", true),
            ("app notin (web)", false),
            ("tier", true),
            ("!tier", false),
            ("!missing", true),
            ("app=web,tier=front", true),
            ("app=web,tier=back", false),
            ("missing!=x", true),
            ("app in (db),tier", false),
        ];
        for (sel, want) in cases {
            let s = LabelSelector::parse(sel).unwrap();
            assert_eq!(s.matches(&obj), want, "selector {sel:?}");
        }
    }

    #[test]
    fn bad_label_selectors_name_the_part() {
        let e = LabelSelector::parse("app=we b").unwrap_err();
        assert!(e.0.contains("app=we b"), "{e}");
        assert!(LabelSelector::parse("app in web").is_err());
        assert!(LabelSelector::parse("=x").is_err());
    }

    #[test]
    fn field_selector_table() {
        let obj = pod(json!({}));
        let cases = [
            ("spec.nodeName=n1", true),
            ("spec.nodeName!=n1", false),
            ("spec.nodeName=", false),
            ("metadata.name=p,metadata.namespace=default", true),
            ("status.phase==Running", true),
            ("status.phase!=Pending", true),
            ("spec.schedulerName=", true),
        ];
        for (sel, want) in cases {
            let s = FieldSelector::parse(sel).unwrap();
            assert_eq!(s.matches(&obj), want, "selector {sel:?}");
        }
        let s = FieldSelector::parse("metadata.namespace=kube-system").unwrap();
        assert_eq!(s.required("metadata.namespace"), Some("kube-system"));
        assert!(FieldSelector::parse("spec.nodeName").is_err());
    }
}
