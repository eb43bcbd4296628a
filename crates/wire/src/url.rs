//! Broker URLs (`redis://user:pass@host:port`, `amqp://user:pass@host:port`)
//! as the streaming component and the workflow engine both take them apart.

/// `(host, port)` of `scheme://[user[:pass]@]host:port[/path]`; IPv6
/// brackets removed.
pub fn host_port(url: &str) -> Option<(String, u16)> {
    let rest = url.split_once("://")?.1;
    let rest = rest.rsplit_once('@').map(|(_, h)| h).unwrap_or(rest);
    let authority = rest.split('/').next()?;
    let (host, port) = authority.rsplit_once(':')?;
    Some((
        host.trim_matches(|c| c == '[' || c == ']').to_string(),
        port.parse().ok()?,
    ))
}

/// The URL without its password: `amqp://u:secret@h:1/x` -> `amqp://u@h:1/x`.
pub fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return String::new();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}@{host}")
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_come_apart() {
        assert_eq!(
            host_port("amqp://u:p@127.0.0.1:5672"),
            Some(("127.0.0.1".into(), 5672))
        );
        assert_eq!(
            host_port("redis://u:p@[::1]:6379/0"),
            Some(("::1".into(), 6379))
        );
        assert_eq!(host_port("redis://nohost"), None);
        assert_eq!(
            without_password("amqp://u:secret@h:5672/%2f"),
            "amqp://u@h:5672/%2f"
        );
        assert_eq!(without_password("http://h:1/"), "http://h:1/");
    }
}
