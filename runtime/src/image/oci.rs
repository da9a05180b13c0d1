//! The OCI image-spec and Docker v2 schema 2 documents skiff reads: index, manifest, config.
//! Unknown fields are ignored; the raw bytes are kept in the store so digests stay exact.

use super::{Digest, ImageError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const OCI_LAYER_NONDIST_GZIP: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// The Accept header of a manifest request: every manifest and index type skiff can read.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// Annotation names that carry an image name in an OCI layout's index.json.
pub const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// Parses `os/arch[/variant]`.
    pub fn parse(text: &str) -> Result<Platform, ImageError> {
        let parts: Vec<&str> = text.split('/').collect();
        match parts.as_slice() {
            [os, arch] | [os, arch, _] if !os.is_empty() && !arch.is_empty() => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: parts.get(2).map(|v| v.to_string()),
            }),
            _ => Err(ImageError::InvalidPlatform {
                value: text.to_string(),
            }),
        }
    }

    /// This host's platform in OCI (GOARCH) terms.
    pub fn host() -> Platform {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            other => other,
        };
        Platform {
            os: "linux".into(),
            architecture: arch.into(),
            variant: None,
        }
    }

    /// Whether an index entry's platform satisfies this wanted one (a wanted variant must
    /// match; an unwanted one is ignored, as containerd's default matcher does for amd64).
    pub fn matches(&self, candidate: &Platform) -> bool {
        self.os == candidate.os
            && self.architecture == candidate.architecture
            && (self.variant.is_none() || self.variant == candidate.variant)
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

/// The image configuration (OCI image-spec config.md; Docker's is a superset).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub config: Option<ContainerConfig>,
    pub rootfs: RootFs,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub stop_signal: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub diff_ids: Vec<Digest>,
}

/// What a document is, judged by its mediaType (from the descriptor or the document itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Index,
    Manifest,
}

/// Classifies a manifest-or-index document. Docker's and OCI's media types are accepted; a
/// document without one is judged by its shape (`manifests` → index), as the OCI spec allows.
pub fn kind_of(media_type: &str, bytes: &[u8], what: &str) -> Result<Kind, ImageError> {
    match media_type {
        OCI_INDEX | DOCKER_LIST => Ok(Kind::Index),
        OCI_MANIFEST | DOCKER_MANIFEST => Ok(Kind::Manifest),
        "" | "application/json" => {
            let v: serde_json::Value = parse_json(bytes, what)?;
            if let Some(mt) = v
                .get("mediaType")
                .and_then(|m| m.as_str())
                .filter(|m| !m.is_empty())
            {
                return kind_of(mt, bytes, what);
            }
            if v.get("manifests").is_some() {
                Ok(Kind::Index)
            } else if v.get("config").is_some() {
                Ok(Kind::Manifest)
            } else {
                Err(ImageError::UnsupportedMediaType {
                    what: what.to_string(),
                    media_type: "(none, and neither manifests nor config)".into(),
                })
            }
        }
        other => Err(ImageError::UnsupportedMediaType {
            what: what.to_string(),
            media_type: other.to_string(),
        }),
    }
}

/// The compression of a layer blob, judged by its first bytes (media types lie: `docker save`
/// calls gzip layers `.tar`), falling back to none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

pub fn sniff_compression(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// Refuses layer media types that are not tar layers (e.g. foreign layers, helm charts).
pub fn check_layer_media_type(media_type: &str, what: &str) -> Result<(), ImageError> {
    match media_type {
        OCI_LAYER
        | OCI_LAYER_GZIP
        | OCI_LAYER_ZSTD
        | OCI_LAYER_NONDIST_GZIP
        | DOCKER_LAYER
        | DOCKER_LAYER_GZIP
        | "" => Ok(()),
        other => Err(ImageError::UnsupportedMediaType {
            what: what.to_string(),
            media_type: other.to_string(),
        }),
    }
}

pub fn parse_json<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: &str,
) -> Result<T, ImageError> {
    serde_json::from_slice(bytes).map_err(|source| ImageError::Json {
        path: what.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_parse_and_match() {
        let want = Platform::parse("linux/amd64").unwrap();
        let v3 = Platform::parse("linux/amd64/v3").unwrap();
        assert!(want.matches(&v3));
        assert!(!v3.matches(&want));
        assert!(!want.matches(&Platform::parse("linux/arm64").unwrap()));
        assert!(Platform::parse("amd64").is_err());
        assert_eq!(v3.to_string(), "linux/amd64/v3");
    }

    #[test]
    fn kinds_from_media_type_or_shape() {
        assert_eq!(kind_of(OCI_INDEX, b"", "x").unwrap(), Kind::Index);
        assert_eq!(kind_of(DOCKER_MANIFEST, b"", "x").unwrap(), Kind::Manifest);
        assert_eq!(
            kind_of("", br#"{"manifests":[]}"#, "x").unwrap(),
            Kind::Index
        );
        assert_eq!(
            kind_of(
                "",
                br#"{"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#,
                "x"
            )
            .unwrap(),
            Kind::Manifest
        );
        let err = kind_of(
            "application/vnd.docker.distribution.manifest.v1+json",
            b"",
            "m",
        )
        .unwrap_err();
        assert!(err.to_string().contains("unsupported media type"), "{err}");
    }

    #[test]
    fn compression_magic() {
        assert_eq!(sniff_compression(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(
            sniff_compression(&[0x28, 0xb5, 0x2f, 0xfd]),
            Compression::Zstd
        );
        assert_eq!(sniff_compression(b"etc/"), Compression::None);
    }
}
