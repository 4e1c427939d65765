//! Where a missing image comes from: its release asset whole, or in parts.
//!
//! A packer release ships an image as `<image>.qcow2`; one too big for a
//! release asset (2 GiB) is cut with coreutils `split`, whose default
//! suffixes make `<image>.qcow2.partaa`, `.partab`, …. Before PVE downloads
//! anything, homestak asks the source itself:
//!
//! 1. the whole asset: there → downloaded whole;
//! 2. else `.partaa`, `.partab`, … in order until one is missing: at least
//!    one there → downloaded part by part and joined on the host;
//! 3. else a permanent error naming every URL asked.
//!
//! `defaults.image_parts` in `site.yaml` gives the number of parts and
//! skips asking. An image already in the storage is never asked about.
//!
//! Each question is a GET of the first byte (`Range: bytes=0-0`), following
//! redirects: a release asset redirects to a signed URL that may be valid
//! for GET only, and a server ignoring the range still answers 200 (the
//! body is never read). A whole asset homestak gets no clear answer about
//! (no connection, a timeout, a status other than found or not found) is
//! left to PVE, as before homestak asked: PVE may reach a source homestak
//! cannot.

use std::time::Duration;

use super::mapping;
use homestak_base::error_chain as chain;

/// Part suffixes as `split` makes them before it widens them: `aa` … `yz`
/// (after `yz` it goes on with `zaaa`).
pub const MAX_PARTS: u32 = 650;

/// How long connecting to the source may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one question may take, redirects included.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);
/// Release downloads redirect once or twice.
const MAX_REDIRECTS: usize = 10;

/// What the source holds for an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// The whole asset `<image>.qcow2`.
    Whole,
    /// `<image>.qcow2.partaa` … : this many parts.
    Parts(u32),
    /// Neither the whole asset nor a first part: the URLs asked.
    Missing(Vec<String>),
    /// No clear answer about the whole asset (why): PVE is asked for it.
    Unchecked(String),
}

/// Asking the source about an image's parts failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot set up the HTTP client that checks image sources")]
    Client(#[source] reqwest::Error),
    #[error("{whole} is not there, and {url} gave no clear answer: {why}")]
    Part {
        whole: String,
        url: String,
        why: String,
    },
    #[error(
        "{url} is there: image {image} has more than {MAX_PARTS} parts, more than homestak \
         follows"
    )]
    TooManyParts { image: String, url: String },
}

impl Error {
    /// Whether asking again later may help.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Part { .. })
    }
}

/// `split`'s suffix of part `index` (from 0): `aa`, `ab`, … `yz`.
pub fn suffix(index: u32) -> Option<String> {
    if index >= MAX_PARTS {
        return None;
    }
    let letter = |n: u32| u8::try_from(n).ok().map(|n| char::from(b'a' + n));
    Some([letter(index / 26)?, letter(index % 26)?].iter().collect())
}

/// The release asset of part `index`: `<image>.qcow2.partaa`.
pub fn part_asset(image: &str, index: u32) -> Option<String> {
    Some(format!(
        "{}.part{}",
        mapping::image_file(image),
        suffix(index)?
    ))
}

/// The file part `index` is stored as in an `import` directory:
/// `<image>.partaa.raw`. PVE accepts `import` downloads only under an image
/// extension and checks the file against it; any bytes are a valid raw
/// image, while only the first part starts with a qcow2 header.
pub fn part_file(image: &str, index: u32) -> Option<String> {
    Some(format!("{image}.part{}.raw", suffix(index)?))
}

/// Whether `file` (a name in an `import` directory) is a part of `image`
/// as [`part_file`] names them.
pub fn is_part_file(image: &str, file: &str) -> bool {
    file.strip_prefix(image)
        .and_then(|rest| rest.strip_prefix(".part"))
        .and_then(|rest| rest.strip_suffix(".raw"))
        .is_some_and(|s| s.len() == 2 && s.bytes().all(|b| b.is_ascii_lowercase()))
}

/// The client that asks sources. Installs the ring provider first.
pub fn client() -> Result<reqwest::Client, Error> {
    homestak_tls::install_crypto_provider();
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(PROBE_TIMEOUT)
        .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
        .user_agent(concat!("homestak/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(Error::Client)
}

/// What one question found.
enum Answer {
    Found,
    Missing,
    Unclear(String),
}

async fn probe(client: &reqwest::Client, url: &str) -> Answer {
    let sent = client
        .get(url)
        .header(reqwest::header::RANGE, "bytes=0-0")
        .send()
        .await;
    match sent {
        Ok(response) => {
            let status = response.status();
            // 416: the range does not fit an empty file, which is there.
            if status.is_success() || status == reqwest::StatusCode::RANGE_NOT_SATISFIABLE {
                Answer::Found
            } else if matches!(status.as_u16(), 404 | 410) {
                Answer::Missing
            } else {
                Answer::Unclear(format!("it answered {status}"))
            }
        }
        Err(err) => Answer::Unclear(chain(&err)),
    }
}

/// Asks the source at `base_url` (ending in `/`) what it holds for
/// `image`: the whole asset, else its parts in order until one is missing.
pub async fn discover(
    client: &reqwest::Client,
    base_url: &str,
    image: &str,
) -> Result<Layout, Error> {
    let whole = format!("{base_url}{}", mapping::image_file(image));
    match probe(client, &whole).await {
        Answer::Found => return Ok(Layout::Whole),
        Answer::Unclear(why) => return Ok(Layout::Unchecked(format!("{whole}: {why}"))),
        Answer::Missing => {}
    }
    let mut found = 0;
    while let Some(asset) = part_asset(image, found) {
        let url = format!("{base_url}{asset}");
        match probe(client, &url).await {
            Answer::Found => found += 1,
            Answer::Missing if found == 0 => return Ok(Layout::Missing(vec![whole, url])),
            Answer::Missing => return Ok(Layout::Parts(found)),
            Answer::Unclear(why) => return Err(Error::Part { whole, url, why }),
        }
    }
    Err(Error::TooManyParts {
        image: image.to_string(),
        url: format!("{base_url}{}.partyz", mapping::image_file(image)),
    })
}

/// Largest checksum file read: a `sha256sum` line is under 200 bytes.
const MAX_CHECKSUM_FILE: usize = 64 << 10;

/// What the source says an image's SHA-256 is (`<image>.qcow2.sha256`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checksum {
    /// The digest, lowercase hex.
    Found(String),
    /// No checksum file: the URL asked (404 or 410).
    Missing(String),
    /// No clear answer: the URL and why.
    Unclear(String, String),
    /// A file that names no digest for the image: the URL.
    Malformed(String),
}

/// The checksum file of `image` at the source: `<image>.qcow2.sha256`, in
/// `sha256sum`'s format (`DIGEST  FILE`, or `DIGEST *FILE`), or the bare
/// digest. A line naming another file does not count.
pub async fn checksum(client: &reqwest::Client, base_url: &str, image: &str) -> Checksum {
    let file = mapping::image_file(image);
    let url = format!("{base_url}{file}.sha256");
    let response = match client.get(&url).send().await {
        Ok(response) => response,
        Err(err) => return Checksum::Unclear(url, chain(&err)),
    };
    let status = response.status();
    if matches!(status.as_u16(), 404 | 410) {
        return Checksum::Missing(url);
    }
    if !status.is_success() {
        return Checksum::Unclear(url, format!("it answered {status}"));
    }
    let text = match read_capped(response, MAX_CHECKSUM_FILE).await {
        Ok(Some(text)) => text,
        Ok(None) => return Checksum::Malformed(url),
        Err(why) => return Checksum::Unclear(url, why),
    };
    match digest_for(&text, &file) {
        Some(digest) => Checksum::Found(digest),
        None => Checksum::Malformed(url),
    }
}

/// The body as text; `None` when it is larger than `limit` or not UTF-8.
async fn read_capped(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Option<String>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| chain(&e))? {
        if body.len() + chunk.len() > limit {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8(body).ok())
}

/// The digest `text` (a checksum file) gives `file`.
pub fn digest_for(text: &str, file: &str) -> Option<String> {
    let is_digest = |d: &str| d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit());
    text.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let digest = fields.next().filter(|d| is_digest(d))?;
        match fields.next() {
            // sha256sum marks binary mode with `*`; a path keeps its name.
            Some(named) => {
                let named = named.strip_prefix('*').unwrap_or(named);
                let name = named.rsplit('/').next().unwrap_or(named);
                (name == file).then(|| digest.to_ascii_lowercase())
            }
            None => Some(digest.to_ascii_lowercase()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_files_name_the_image() {
        let d = "ab".repeat(32);
        let file = "debian-13.qcow2";
        assert_eq!(digest_for(&format!("{d}  {file}\n"), file), Some(d.clone()));
        assert_eq!(digest_for(&format!("{d} *{file}"), file), Some(d.clone()));
        assert_eq!(
            digest_for(&format!("{d}  images/debian-13/{file}"), file),
            Some(d.clone())
        );
        assert_eq!(digest_for(&d.to_uppercase(), file), Some(d.clone()));
        let other = "cd".repeat(32);
        assert_eq!(
            digest_for(&format!("{other}  debian-12.qcow2\n{d}  {file}\n"), file),
            Some(d.clone())
        );
        for bad in [
            "",
            "Q",
            "abc  debian-13.qcow2",
            &format!("{d}  debian-12.qcow2"),
        ] {
            assert_eq!(digest_for(bad, file), None, "{bad:?}");
        }
    }

    #[test]
    fn suffixes_follow_split() {
        assert_eq!(suffix(0).as_deref(), Some("aa"));
        assert_eq!(suffix(1).as_deref(), Some("ab"));
        assert_eq!(suffix(25).as_deref(), Some("az"));
        assert_eq!(suffix(26).as_deref(), Some("ba"));
        assert_eq!(suffix(MAX_PARTS - 1).as_deref(), Some("yz"));
        assert_eq!(suffix(MAX_PARTS), None);
        assert_eq!(
            part_asset("debian-13-pve", 2).as_deref(),
            Some("debian-13-pve.qcow2.partac")
        );
        assert_eq!(
            part_file("debian-13-pve", 2).as_deref(),
            Some("debian-13-pve.partac.raw")
        );
    }

    #[test]
    fn part_files_are_recognised() {
        assert!(is_part_file("debian-13", "debian-13.partaa.raw"));
        assert!(is_part_file("debian-13", "debian-13.partyz.raw"));
        for other in [
            "debian-13.qcow2",
            "debian-13.part00.raw",
            "debian-13.partaaa.raw",
            "debian-13.partAA.raw",
            "debian-13-pve.partaa.raw",
            "debian-13.partaa.qcow2",
        ] {
            assert!(!is_part_file("debian-13", other), "{other}");
        }
    }
}
