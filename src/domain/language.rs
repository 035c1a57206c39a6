//! The languages we know: one table that the executor, the runner, the hints and the CLI read.

/// How the in-pod runner starts a language's program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunnerKind {
    /// `python3 -u wrapper.py`, with the lock installed by uv or pip.
    Python,
    /// `bash main.sh <args in declared order>`.
    Bash,
    /// `bun run wrapper.ts`, with the lock installed by `bun install`.
    Bun,
    /// `deno run wrapper.ts` (Deno fetches imports itself).
    Deno,
}

/// What we know of one Windmill language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LanguageInfo {
    /// Windmill's name (`script_lang`).
    pub name: &'static str,
    /// The line-comment marker `k8s:` hints are read after.
    pub comment: &'static str,
    /// File extensions that mean this language for local commands (`hints`, `render`); an
    /// extension is listed under one language only.
    pub extensions: &'static [&'static str],
    /// How the in-pod runner runs it, and the file name of its code there; `None` when only
    /// hints are read (the job then goes to a stock Windmill worker).
    pub runner: Option<(RunnerKind, &'static str)>,
}

const fn lang(
    name: &'static str,
    comment: &'static str,
    extensions: &'static [&'static str],
    runner: Option<(RunnerKind, &'static str)>,
) -> LanguageInfo {
    LanguageInfo {
        name,
        comment,
        extensions,
        runner,
    }
}

/// Every language we read hints from, and the ones the runner runs. `go` is read for hints only:
/// the runner has no Go toolchain step, so Go scripts are refused with the list of what runs.
pub const LANGUAGES: &[LanguageInfo] = &[
    lang(
        "python3",
        "#",
        &["py"],
        Some((RunnerKind::Python, "main.py")),
    ),
    lang(
        "bash",
        "#",
        &["sh", "bash"],
        Some((RunnerKind::Bash, "main.sh")),
    ),
    lang(
        "bun",
        "//",
        &["ts", "js"],
        Some((RunnerKind::Bun, "main.ts")),
    ),
    lang("deno", "//", &[], Some((RunnerKind::Deno, "main.ts"))),
    lang("nativets", "//", &[], Some((RunnerKind::Bun, "main.ts"))),
    lang("bunnative", "//", &[], None),
    lang("go", "//", &["go"], None),
    lang("rust", "//", &[], None),
    lang("java", "//", &[], None),
    lang("csharp", "//", &[], None),
    lang("powershell", "#", &["ps1"], None),
    lang("nu", "#", &[], None),
    lang("ruby", "#", &[], None),
    lang("ansible", "#", &[], None),
    lang("postgresql", "--", &["sql"], None),
    lang("mysql", "--", &[], None),
    lang("bigquery", "--", &[], None),
    lang("snowflake", "--", &[], None),
    lang("mssql", "--", &[], None),
    lang("oracledb", "--", &[], None),
    lang("duckdb", "--", &[], None),
];

impl LanguageInfo {
    /// The entry of a language by Windmill's name.
    #[must_use]
    pub fn of(name: &str) -> Option<&'static Self> {
        LANGUAGES.iter().find(|l| l.name == name)
    }

    /// The language a file extension means, if any.
    #[must_use]
    pub fn of_extension(extension: &str) -> Option<&'static Self> {
        LANGUAGES.iter().find(|l| l.extensions.contains(&extension))
    }

    /// The names of the languages the in-pod runner runs, in table order.
    pub fn runnable() -> impl Iterator<Item = &'static str> {
        LANGUAGES
            .iter()
            .filter(|l| l.runner.is_some())
            .map(|l| l.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_runnable_language_has_a_main_file_and_extensions_are_unique() {
        assert_eq!(
            LanguageInfo::runnable().collect::<Vec<_>>(),
            ["python3", "bash", "bun", "deno", "nativets"]
        );
        let extensions: Vec<&str> = LANGUAGES
            .iter()
            .flat_map(|l| l.extensions)
            .copied()
            .collect();
        let mut unique = extensions.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(extensions.len(), unique.len(), "{extensions:?}");
        assert_eq!(
            LanguageInfo::of_extension("ts").map(|l| l.name),
            Some("bun")
        );
        assert!(LanguageInfo::of("go").is_some_and(|l| l.runner.is_none()));
    }
}
