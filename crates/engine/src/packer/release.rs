//! Which packer release images come from: `--packer-release TAG`, else
//! `defaults.packer_release` in site.yaml, else `latest`.
//!
//! The download base is the release's URL,
//! `https://github.com/<packer_release_repo>/releases/download/<tag>/`,
//! unless site.yaml sets `image_source` (a URL prefix) and no
//! `--packer-release` was given: a release asked for on the command line
//! wins over the site's image source, since that is what the person asked
//! for.

use homestak_core::site::SiteDefaults;

/// The release tag when neither the command line nor site.yaml names one.
pub const DEFAULT_RELEASE: &str = "latest";
/// The repository releases come from by default.
pub const DEFAULT_REPO: &str = "homestak-dev/packer";

/// The release tag: `flag` > `defaults.packer_release` > `latest`.
pub fn release_tag(flag: Option<&str>, defaults: &SiteDefaults) -> String {
    flag.filter(|t| !t.trim().is_empty())
        .or(defaults.packer_release.as_deref())
        .unwrap_or(DEFAULT_RELEASE)
        .to_string()
}

/// Where missing images are downloaded from (ends in `/`).
pub fn image_base_url(flag: Option<&str>, defaults: &SiteDefaults) -> String {
    let explicit = flag.is_some_and(|t| !t.trim().is_empty());
    if !explicit && let Some(source) = &defaults.image_source {
        return source.clone();
    }
    format!(
        "https://github.com/{}/releases/download/{}/",
        defaults
            .packer_release_repo
            .as_deref()
            .unwrap_or(DEFAULT_REPO),
        release_tag(flag, defaults)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults(release: Option<&str>, source: Option<&str>) -> SiteDefaults {
        SiteDefaults {
            packer_release: release.map(String::from),
            image_source: source.map(String::from),
            ..SiteDefaults::default()
        }
    }

    #[test]
    fn the_flag_wins_then_site_yaml_then_latest() {
        let none = defaults(None, None);
        let site = defaults(Some("v0.9"), None);
        assert_eq!(release_tag(None, &none), "latest");
        assert_eq!(release_tag(None, &site), "v0.9");
        assert_eq!(release_tag(Some("v1.2"), &site), "v1.2");
        assert_eq!(release_tag(Some(" "), &site), "v0.9");
        assert_eq!(
            image_base_url(None, &none),
            "https://github.com/homestak-dev/packer/releases/download/latest/"
        );
        assert_eq!(
            image_base_url(Some("v1.2"), &site),
            "https://github.com/homestak-dev/packer/releases/download/v1.2/"
        );
    }

    #[test]
    fn image_source_applies_unless_a_release_is_asked_for() {
        let site = defaults(Some("v0.9"), Some("https://127.0.0.1:9/images/"));
        assert_eq!(image_base_url(None, &site), "https://127.0.0.1:9/images/");
        assert_eq!(
            image_base_url(Some("v1.2"), &site),
            "https://github.com/homestak-dev/packer/releases/download/v1.2/"
        );
    }
}
