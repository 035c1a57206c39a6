//! Windmill's job kinds: the ones we run, and where each kind we do not run goes instead.

use std::fmt;

/// Windmill's `job_kind`, reduced to what decides whether we may run a job.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum JobKind {
    /// A deployed script, code from `script` by hash.
    Script,
    /// A script run from the editor, code in `v2_job.raw_code`.
    Preview,
    /// An inline flow step, code in `flow_node`.
    FlowScript,
    /// Any other kind, by its Windmill name (`appscript`, `aiagent`, ...).
    Other(String),
}

impl JobKind {
    /// Kinds that a worker of ours never claims: they belong to Windmill's own workers (flows,
    /// dependency jobs) or are the trivial jobs our hand-back creates (`identity`). The union of
    /// [`Self::DEPENDENCY_KINDS`], [`Self::FLOW_KINDS`] and [`Self::FINALIZED_KINDS`]; on our tags
    /// they are re-tagged for a stock worker at once.
    pub const NEVER_CLAIMED: &'static [&'static str] = &[
        "flow",
        "flowpreview",
        "singlestepflow",
        "singlescriptflow",
        "flownode",
        "dependencies",
        "flowdependencies",
        "appdependencies",
        "identity",
        "noop",
        "unassigned_script",
        "unassigned_flow",
        "unassigned_singlestepflow",
    ];

    /// Lock-file kinds. Windmill pushes a script's lock job with the script's tag (so a
    /// k8s-tagged script puts it on ours); a stock worker serving `dependency` runs it.
    pub const DEPENDENCY_KINDS: &'static [&'static str] =
        &["dependencies", "flowdependencies", "appdependencies"];

    /// Flow kinds (Windmill's `JobKind::is_flow`, and `singlescriptflow`): a stock worker serving
    /// `flow` runs them.
    pub const FLOW_KINDS: &'static [&'static str] = &[
        "flow",
        "flowpreview",
        "singlestepflow",
        "singlescriptflow",
        "flownode",
    ];

    /// Kinds a stock worker ends without running code (`identity`, `noop`) or fails
    /// (`unassigned_*`): they go to the finalize tag.
    pub const FINALIZED_KINDS: &'static [&'static str] = &[
        "identity",
        "noop",
        "unassigned_script",
        "unassigned_flow",
        "unassigned_singlestepflow",
    ];

    /// Parses Windmill's name of a kind.
    #[must_use]
    pub fn from_windmill(name: &str) -> Self {
        match name {
            "script" => Self::Script,
            "preview" => Self::Preview,
            "flowscript" => Self::FlowScript,
            other => Self::Other(other.to_owned()),
        }
    }

    /// Windmill's name of this kind.
    #[must_use]
    pub fn as_str(&self) -> &str {
        match self {
            Self::Script => "script",
            Self::Preview => "preview",
            Self::FlowScript => "flowscript",
            Self::Other(name) => name,
        }
    }
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
