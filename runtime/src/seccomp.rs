//! linux.seccomp → a libseccomp filter. Building is separate from loading so the filter is
//! checked (and its errors reported) before the container starts.

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator};
use std::str::FromStr;

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("linux.seccomp.{field}: {value}: {reason}")]
    Invalid {
        field: String,
        value: String,
        reason: String,
    },
    #[error("libseccomp: {operation}")]
    Library {
        operation: String,
        #[source]
        source: libseccomp::error::SeccompError,
    },
}

fn json_name<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The libseccomp action for an OCI action; ERRNO defaults to EPERM like runc.
fn action(
    field: &str,
    act: LinuxSeccompAction,
    errno: Option<u32>,
) -> Result<ScmpAction, SeccompError> {
    Ok(match act {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => {
            ScmpAction::Errno(errno.map(|e| e as i32).unwrap_or(libc::EPERM))
        }
        LinuxSeccompAction::ScmpActTrace => {
            ScmpAction::Trace(errno.map(|e| e as u16).unwrap_or(libc::EPERM as u16))
        }
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActNotify => {
            return Err(SeccompError::Invalid {
                field: field.to_string(),
                value: "SCMP_ACT_NOTIFY".into(),
                reason: "seccomp user notification (listenerPath) is not supported".into(),
            })
        }
    })
}

/// Builds the filter. Syscall names this libseccomp does not know are skipped (runc does the
/// same: profiles list syscalls of newer kernels).
pub fn build(seccomp: &LinuxSeccomp) -> Result<ScmpFilterContext, SeccompError> {
    let lib = |operation: String| {
        move |source: libseccomp::error::SeccompError| SeccompError::Library { operation, source }
    };
    let default = action(
        "defaultAction",
        seccomp.default_action(),
        seccomp.default_errno_ret(),
    )?;
    let mut ctx = ScmpFilterContext::new(default).map_err(lib("creating the filter".into()))?;
    // We set no_new_privs ourselves when the spec asks; libseccomp must not force it.
    ctx.set_ctl_nnp(false)
        .map_err(lib("clearing the nnp attribute".into()))?;
    for (i, arch) in seccomp.architectures().iter().flatten().enumerate() {
        let name = json_name(arch);
        let parsed = ScmpArch::from_str(&name).map_err(|_| SeccompError::Invalid {
            field: format!("architectures[{i}]"),
            value: name.clone(),
            reason: "unknown architecture".into(),
        })?;
        ctx.add_arch(parsed)
            .map_err(lib(format!("adding architecture {name}")))?;
    }
    for (i, rule) in seccomp.syscalls().iter().flatten().enumerate() {
        let act = action(
            &format!("syscalls[{i}].action"),
            rule.action(),
            rule.errno_ret(),
        )?;
        if act == default {
            // libseccomp refuses rules equal to the default action; they are no-ops anyway.
            continue;
        }
        let mut compares = Vec::new();
        for (j, arg) in rule.args().iter().flatten().enumerate() {
            let op = match arg.op() {
                LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
                LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
                LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
                LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
                LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
                LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
                LinuxSeccompOperator::ScmpCmpMaskedEq => ScmpCompareOp::MaskedEqual(arg.value()),
            };
            if arg.index() > 5 {
                return Err(SeccompError::Invalid {
                    field: format!("syscalls[{i}].args[{j}].index"),
                    value: arg.index().to_string(),
                    reason: "syscalls have at most 6 arguments (0-5)".into(),
                });
            }
            // For MASKED_EQ, `value` is the mask and `valueTwo` the datum (runtime-spec).
            let datum = match op {
                ScmpCompareOp::MaskedEqual(_) => arg.value_two().unwrap_or(0),
                _ => arg.value(),
            };
            compares.push(ScmpArgCompare::new(arg.index() as u32, op, datum));
        }
        for name in rule.names() {
            let Ok(syscall) = ScmpSyscall::from_name(name) else {
                tracing::debug!(syscall = %name, "seccomp: unknown syscall skipped");
                continue;
            };
            let added = if compares.is_empty() {
                ctx.add_rule(act, syscall)
            } else {
                ctx.add_rule_conditional(act, syscall, &compares)
            };
            added.map_err(lib(format!("adding the rule for {name} (syscalls[{i}])")))?;
        }
    }
    Ok(ctx)
}

/// Loads a built filter into the calling thread (and, being single-threaded, the process).
pub fn load(ctx: &ScmpFilterContext) -> Result<(), SeccompError> {
    ctx.load().map_err(|source| SeccompError::Library {
        operation: "loading the filter".into(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seccomp(json: serde_json::Value) -> LinuxSeccomp {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn builds_a_typical_profile() {
        let s = seccomp(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
            "syscalls": [
                {"names": ["mkdir", "mkdirat", "no_such_syscall"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
                {"names": ["personality"], "action": "SCMP_ACT_ERRNO",
                 "args": [{"index": 0, "value": 255, "valueTwo": 8, "op": "SCMP_CMP_MASKED_EQ"}]}
            ]
        }));
        build(&s).unwrap();
    }

    #[test]
    fn notify_is_refused_with_its_field() {
        let s = seccomp(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]
        }));
        let err = build(&s).unwrap_err().to_string();
        assert!(err.contains("syscalls[0].action"), "{err}");
    }

    #[test]
    fn bad_arg_index() {
        let s = seccomp(serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW",
                          "args": [{"index": 7, "value": 1, "op": "SCMP_CMP_EQ"}]}]
        }));
        let err = build(&s).unwrap_err().to_string();
        assert!(err.contains("syscalls[0].args[0].index"), "{err}");
    }
}
