//! Reading argument order from a script, as Windmill does: Bash declares `name="$1"`, TypeScript
//! passes arguments positionally in the order of `main`'s parameters.

/// Names of a Bash script's arguments in positional order, from lines like `name="$1"`,
/// `name=$2` or `name="${3:-default}"`.
#[must_use]
pub fn bash_arg_order(code: &str) -> Vec<String> {
    let mut found: Vec<(u32, String)> = Vec::new();
    for line in code.lines() {
        let line = line.trim_start();
        let Some((name, value)) = line.split_once('=') else {
            continue;
        };
        if name.is_empty()
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            || name.starts_with(|c: char| c.is_ascii_digit())
        {
            continue;
        }
        let value = value.trim_start_matches('"');
        let Some(rest) = value.strip_prefix('$') else {
            continue;
        };
        let rest = rest.trim_start_matches('{');
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if let Ok(index) = digits.parse::<u32>()
            && index > 0
            && !found.iter().any(|(i, _)| *i == index)
        {
            found.push((index, name.to_owned()));
        }
    }
    found.sort();
    // Positions without a declaration get an empty name (an empty string is passed).
    let mut names = Vec::new();
    for (index, name) in found {
        while names.len() + 1 < index as usize {
            names.push(String::new());
        }
        names.push(name);
    }
    names
}

/// Parameter names of `function <entrypoint>(...)` in TypeScript, in order. Destructured
/// parameters get an empty name (they receive `undefined`).
#[must_use]
pub fn ts_param_names(code: &str, entrypoint: &str) -> Vec<String> {
    let needle = format!("function {entrypoint}");
    let Some(start) = code.find(&needle) else {
        return Vec::new();
    };
    let after = &code[start + needle.len()..];
    // Skip generics, then find the opening parenthesis.
    let Some(open) = after.find('(') else {
        return Vec::new();
    };
    let body = &after[open + 1..];
    let mut depth = 0i32;
    let mut params = Vec::new();
    let mut current = String::new();
    let mut quote: Option<char> = None;
    for c in body.chars() {
        if let Some(q) = quote {
            current.push(c);
            if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' | '`' => {
                quote = Some(c);
                current.push(c);
            }
            '(' | '{' | '[' | '<' => {
                depth += 1;
                current.push(c);
            }
            ')' if depth == 0 => {
                params.push(std::mem::take(&mut current));
                break;
            }
            ')' | '}' | ']' | '>' => {
                depth -= 1;
                current.push(c);
            }
            ',' if depth == 0 => params.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    params
        .iter()
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
        .map(|p| {
            let p = p.trim_start_matches("...");
            p.chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '$')
                .collect()
        })
        .collect()
}

/// A short, stable hash for cache keys (FNV-1a, 64 bits, hex).
#[must_use]
pub fn short_hash(text: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn bash_order_follows_the_positions_not_the_lines() {
        let code = "#!/bin/bash\nb=\"$2\"\na=\"$1\"\nc=\"${3:-x}\"\nd=$5\necho $a\n";
        assert_eq!(bash_arg_order(code), ["a", "b", "c", "", "d"]);
        assert!(bash_arg_order("echo hi\nx=1\n").is_empty());
    }

    #[test]
    fn ts_names_skip_types_defaults_and_generics() {
        let code = "export async function main<T>(a: string, b: Record<string, number> = {x: 1}, c?: [number, string], ...rest: T[]) {}";
        assert_eq!(ts_param_names(code, "main"), ["a", "b", "c", "rest"]);
        assert_eq!(
            ts_param_names("export function main() {}", "main"),
            Vec::<String>::new()
        );
        assert_eq!(
            ts_param_names("export function run(q = \"a,b\") {}", "run"),
            ["q"]
        );
        assert_eq!(
            ts_param_names("export function main({ a, b }: X) {}", "main"),
            [""]
        );
    }

    proptest! {
        #[test]
        fn parsers_never_panic(code in "\\PC*") {
            let _ = bash_arg_order(&code);
            let _ = ts_param_names(&code, "main");
        }
    }
}
