//! `{{...}}` substitution, Argo's simple template tags:
//! `{{workflow.name}}`, `{{inputs.parameters.x}}`,
//! `{{tasks.T.outputs.parameters.P}}`, `{{item}}`, `{{item.key}}`, ...
//! Expression tags (`{{=...}}`) are outside the subset.

/// The variable names `text` refers to, in order.
pub fn references(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| format!("{text:?} opens {{{{ without closing it"))?;
        let name = after[..end].trim();
        if name.starts_with('=') {
            return Err(format!(
                "{text:?}: expression tags ({{{{=...}}}}) are not supported; use a plain variable such as {{{{inputs.parameters.x}}}}"
            ));
        }
        if name.is_empty() {
            return Err(format!("{text:?} has an empty {{{{}}}}"));
        }
        out.push(name.to_string());
        rest = &after[end + 2..];
    }
    Ok(out)
}

/// Replaces every tag by `lookup`'s value; the first name it cannot give
/// is the error.
pub fn substitute(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    if !text.contains("{{") {
        return Ok(text.to_string());
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| format!("{text:?} opens {{{{ without closing it"))?;
        let name = after[..end].trim();
        let value = lookup(name).ok_or_else(|| format!("failed to resolve {{{{{name}}}}}"))?;
        out.push_str(&value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The paper's `outputs.params.P` is Argo's `outputs.parameters.P`.
pub fn canonical(name: &str) -> std::borrow::Cow<'_, str> {
    if name.contains(".outputs.params.") {
        std::borrow::Cow::Owned(name.replacen(".outputs.params.", ".outputs.parameters.", 1))
    } else {
        std::borrow::Cow::Borrowed(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitutes_and_names_what_is_missing() {
        let lookup = |n: &str| (n == "inputs.parameters.m").then(|| "hi".to_string());
        assert_eq!(
            substitute("say {{ inputs.parameters.m }}!", lookup).unwrap(),
            "say hi!"
        );
        assert_eq!(
            substitute("{{inputs.parameters.x}}", lookup).unwrap_err(),
            "failed to resolve {{inputs.parameters.x}}"
        );
        assert_eq!(references("{{a}} {{ b.c }}").unwrap(), vec!["a", "b.c"]);
        assert!(references("{{=1+1}}").is_err());
        assert!(references("{{open").is_err());
        assert_eq!(
            canonical("tasks.s.outputs.params.JOB_ID"),
            "tasks.s.outputs.parameters.JOB_ID"
        );
    }
}
