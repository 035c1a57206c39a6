//! The checks that keep names reaching the pod spec within what Kubernetes accepts (object
//! names, label keys and values, annotations, images, mount paths), and the one way a hostile
//! value is shown in a message.

/// A value for a message: at most 64 characters, control characters escaped, so that hostile
/// input cannot flood or garble the Windmill job log.
#[must_use]
pub fn shorten(text: &str) -> String {
    const MAX: usize = 64;
    let mut shown: String = text
        .chars()
        .take(MAX)
        .flat_map(char::escape_debug)
        .collect();
    if text.chars().nth(MAX).is_some() {
        shown.push('…');
    }
    shown
}

/// A Kueue `LocalQueue` name: a DNS subdomain that is also a label value (it goes into the
/// `kueue.x-k8s.io/queue-name` label), so at most 63 characters.
pub fn check_local_queue(name: &str) -> Result<(), String> {
    check_dns_subdomain(name)?;
    if name.len() > 63 {
        return Err(format!(
            "`{}` is longer than 63 characters: it becomes the value of the kueue.x-k8s.io/queue-name label",
            shorten(name)
        ));
    }
    Ok(())
}

/// A cluster's name in `clusters:`: a DNS label (it becomes a metric label value and appears in
/// job logs), at most 63 characters.
pub fn check_cluster_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a cluster name: 1 to 63 lowercase letters, digits and '-', like `gpu` or `eu-west-1`",
            shorten(name)
        ))
    }
}

/// A DNS subdomain (RFC 1123), the form of most object names: Secrets, ConfigMaps, PVCs,
/// service accounts, priority classes, runtime classes.
pub fn check_dns_subdomain(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name
            .split('.')
            .all(|part| !part.is_empty() && !part.starts_with('-') && !part.ends_with('-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a valid Kubernetes name (lower-case letters, digits, '-' and '.', at most 253, e.g. etl-credentials)",
            shorten(name)
        ))
    }
}

/// The name part of a label key, or a label value: at most 63 of `[A-Za-z0-9._-]`, starting and
/// ending alphanumeric.
fn is_label_name(text: &str) -> bool {
    text.len() <= 63
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && text
            .bytes()
            .next()
            .is_none_or(|b| b.is_ascii_alphanumeric())
        && text
            .bytes()
            .last()
            .is_none_or(|b| b.is_ascii_alphanumeric())
}

/// A label, annotation, node-selector or taint key: `[prefix/]name`.
pub fn check_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let ok = !name.is_empty()
        && is_label_name(name)
        && prefix.is_none_or(|p| check_dns_subdomain(p).is_ok());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a valid key (optional DNS prefix and '/', then at most 63 of letters, digits, '-', '_', '.', e.g. example.com/team)",
            shorten(key)
        ))
    }
}

/// A label or node-selector value: empty, or at most 63 of `[A-Za-z0-9._-]`.
pub fn check_label_value(value: &str) -> Result<(), String> {
    if is_label_name(value) {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a valid label value (at most 63 of letters, digits, '-', '_', '.')",
            shorten(value)
        ))
    }
}

/// Longest annotation value a hint may set. Kubernetes allows 256 KiB for all annotations
/// together; a hint line is at most 4 KiB anyway, a profile could otherwise be larger.
pub const MAX_ANNOTATION_VALUE: usize = 4096;

/// An annotation value: any text without control characters (tabs excepted), bounded.
pub fn check_annotation_value(value: &str) -> Result<(), String> {
    if value.len() > MAX_ANNOTATION_VALUE {
        return Err(format!(
            "annotation value is {} bytes; at most {MAX_ANNOTATION_VALUE}",
            value.len()
        ));
    }
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return Err("annotation value contains control characters".into());
    }
    Ok(())
}

/// An image reference (`ghcr.io/acme/etl:1.4`, `python@sha256:...`): the characters a reference
/// may hold, bounded. The registry has the last word; this keeps garbage out of the pod spec.
pub fn check_image(image: &str) -> Result<(), String> {
    let ok = !image.is_empty()
        && image.len() <= 512
        && image.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/' | b':' | b'@')
        })
        && image
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && !image.contains("..")
        && !image.contains("//");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not an image reference; write it like ghcr.io/acme/etl:1.4",
            shorten(image)
        ))
    }
}

/// A mount path: absolute, not `/`, no `..`, and free of the characters the volume syntax and
/// Kubernetes reserve.
pub fn check_mount_path(path: &str) -> Result<(), String> {
    // The runner's own mounts (see `runner`): a volume there would hide the job's code.
    if path == "/tmp" || path == "/flext" || path.starts_with("/flext/") {
        return Err(format!(
            "`{}` is reserved for the worker's runner (/flext/..., /tmp); mount elsewhere, e.g. /mnt/data",
            shorten(path)
        ));
    }
    let ok = path.starts_with('/')
        && path.len() > 1
        && path.len() <= 1024
        && !path.split('/').any(|part| part == "..")
        && !path
            .chars()
            .any(|c| c.is_control() || c == ':' || c == ',' || c.is_whitespace());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a mount path: it must be absolute, not `/`, without `..`, spaces or ':' (e.g. /mnt/data)",
            shorten(path)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_checks() {
        assert!(check_dns_subdomain("etl-credentials.v2").is_ok());
        for bad in ["", "Upper", "-x", "x-", "a..b", "a_b", &"a".repeat(254)] {
            assert!(check_dns_subdomain(bad).is_err(), "{bad:?}");
        }
        assert!(check_label_key("example.com/team").is_ok());
        assert!(check_label_key("Team_1").is_ok());
        for bad in ["", "/x", "a/", "x/y/z", "-a", &"a".repeat(64)] {
            assert!(check_label_key(bad).is_err(), "{bad:?}");
        }
        assert!(check_image("ghcr.io/acme/etl:1.4").is_ok());
        assert!(check_image("python@sha256:0123abcd").is_ok());
        for bad in ["", "-x", "a b", "a/../b", "a\0b", "x//y"] {
            assert!(check_image(bad).is_err(), "{bad:?}");
        }
        assert_eq!(shorten("a\0b"), "a\\0b");
        assert_eq!(shorten(&"x".repeat(100)).chars().count(), 65);
    }
}
