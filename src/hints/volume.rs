//! Volumes a hint can mount: an existing PVC, a sized scratch emptyDir, the dependency cache.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::names::{check_dns_subdomain, check_mount_path, shorten};
use super::quantity::Bytes;
use super::values::{from_yaml_text, quantity};

/// A volume mounted into the job's container.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Volume {
    /// `pvc:NAME:/path[:ro]`: an existing PersistentVolumeClaim.
    Pvc {
        /// The claim's name.
        claim: String,
        /// Where it is mounted.
        mount_path: String,
        /// Mounted read-only.
        read_only: bool,
    },
    /// `empty:/path:SIZE`: a scratch emptyDir with a size limit, gone with the pod.
    EmptyDir {
        /// Where it is mounted.
        mount_path: String,
        /// The emptyDir's `sizeLimit` (counts toward the pod's ephemeral storage).
        size: Bytes,
    },
    /// `cache:/path`: the worker's shared dependency cache (pip/npm/go caches), provided by the
    /// executor.
    DependencyCache {
        /// Where it is mounted.
        mount_path: String,
    },
}

impl Volume {
    /// Where the volume is mounted; two volumes may not share it.
    #[must_use]
    pub fn mount_path(&self) -> &str {
        match self {
            Self::Pvc { mount_path, .. }
            | Self::EmptyDir { mount_path, .. }
            | Self::DependencyCache { mount_path } => mount_path,
        }
    }

    fn check(&self) -> Result<(), String> {
        check_mount_path(self.mount_path())?;
        match self {
            Self::Pvc { claim, .. } => {
                check_dns_subdomain(claim).map_err(|e| format!("claim name: {e}"))
            }
            Self::EmptyDir { size, .. } if size.0 == 0 => {
                Err("emptyDir size must be more than 0".into())
            }
            _ => Ok(()),
        }
    }
}

const VOLUME_FORMS: &str = "pvc:NAME:/path[:ro], empty:/path:SIZE or cache:/path";

impl FromStr for Volume {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let volume = match parts.as_slice() {
            ["pvc", claim, path] => Self::Pvc {
                claim: (*claim).to_owned(),
                mount_path: (*path).to_owned(),
                read_only: false,
            },
            ["pvc", claim, path, mode @ ("ro" | "rw")] => Self::Pvc {
                claim: (*claim).to_owned(),
                mount_path: (*path).to_owned(),
                read_only: *mode == "ro",
            },
            ["empty", path, size] => Self::EmptyDir {
                mount_path: (*path).to_owned(),
                size: quantity::<Bytes>(size)?,
            },
            ["cache", path] => Self::DependencyCache {
                mount_path: (*path).to_owned(),
            },
            _ => {
                return Err(format!(
                    "`{}` is not a volume; write {VOLUME_FORMS}",
                    shorten(s)
                ));
            }
        };
        volume.check()?;
        Ok(volume)
    }
}

impl fmt::Display for Volume {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pvc {
                claim,
                mount_path,
                read_only,
            } => write!(
                f,
                "pvc:{claim}:{mount_path}{}",
                if *read_only { ":ro" } else { "" }
            ),
            Self::EmptyDir { mount_path, size } => write!(f, "empty:{mount_path}:{size}"),
            Self::DependencyCache { mount_path } => write!(f, "cache:{mount_path}"),
        }
    }
}

impl<'de> Deserialize<'de> for Volume {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_yaml_text(d, "a volume like \"pvc:data:/mnt/data:ro\"")
    }
}

impl Serialize for Volume {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_have_three_forms() {
        for text in [
            "pvc:data:/mnt/data",
            "pvc:data:/mnt/data:ro",
            "empty:/scratch:1Gi",
            "cache:/cache",
        ] {
            let v: Volume = text.parse().unwrap();
            assert_eq!(v.to_string(), text);
        }
        assert_eq!(
            "pvc:data:/mnt/data:rw"
                .parse::<Volume>()
                .unwrap()
                .to_string(),
            "pvc:data:/mnt/data"
        );
        for bad in [
            "pvc:Data:/x",
            "pvc:data:relative",
            "pvc:data:/",
            "pvc:data:/a/../etc",
            "empty:/x",
            "empty:/x:0",
            "empty:/x:lots",
            "cache",
            "nfs:server:/x",
            "pvc:data:/x:rx",
        ] {
            assert!(bad.parse::<Volume>().is_err(), "{bad:?} parsed");
        }
    }
}
