//! The one error type of the validators (dataset invariants here, model and training settings in
//! cqr-models): which field broke which rule. Callers add the context (file, config section).

/// A value that breaks a rule: `field` names it (`splits`, `dlrm.top`, `precision`), `reason`
/// says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Invalid {
    pub field: String,
    pub reason: String,
}

impl Invalid {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Invalid { field: field.into(), reason: reason.into() }
    }
}

/// `Err(Invalid::new(field, reason))`.
pub fn invalid<T>(field: impl Into<String>, reason: impl Into<String>) -> Result<T, Invalid> {
    Err(Invalid::new(field, reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_field_then_the_reason() {
        let e = invalid::<()>("dlrm.top", "must end with 1 output").unwrap_err();
        assert_eq!((e.field.as_str(), e.to_string().as_str()), ("dlrm.top", "dlrm.top: must end with 1 output"));
    }
}
