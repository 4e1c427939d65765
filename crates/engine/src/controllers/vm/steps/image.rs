//! `ensure_image`: the image is in the import storage.
//!
//! A missing image is downloaded with `download-url`, once for all the
//! nodes that need it: the first node claims the volume in the
//! controller's download table before it asks PVE, the others follow that
//! task. Whether the source holds the image whole or in parts is asked
//! once per run (see [`crate::controllers::vm::source`]), unless
//! `image_parts` gives the number of parts. An image in parts is
//! downloaded part by part (each part once, all at the same time), then
//! joined on the host over SSH (see [`crate::controllers::vm::host`]) by
//! one node while the others wait, and checked through the API before the
//! parts are removed.
//!
//! Parts are stored as `<image>.partaa.raw`, not under the release's name
//! `<image>.qcow2.partaa`: PVE accepts `import` downloads only with an
//! `.ova`, `.qcow2`, `.raw` or `.vmdk` name, and since 8.3 checks the file
//! against that format (`qemu-img info -f <format>`, untrusted mode) before
//! keeping it. Only the first part starts with a qcow2 header, so a part
//! named `.qcow2` would be refused; any bytes are a valid raw image.
//!
//! Every pass looks at the storage first, so the step resumes wherever an
//! earlier run stopped: an image there is used as it is (the source is not
//! asked), parts already there are not downloaded again, and parts left
//! next to a joined image are removed.

use std::collections::HashMap;
use std::sync::Arc;

use super::*;
use crate::controllers::vm::host;
use crate::controllers::vm::source::{self, Layout};

/// Where one download stands after a look.
enum Fetch {
    /// Running (or being started by another node).
    Pending,
    /// Just finished: the file shows up at the next look.
    Soon,
    Failed(Outcome),
}

/// The import files of the image storage (volid → size), and when they
/// were asked for.
struct Listing {
    files: HashMap<String, Option<u64>>,
    listed_at: Instant,
}

/// One part of a split image.
struct Part {
    /// `local:import/debian-13-pve.partaa.raw`
    volume: String,
    /// `debian-13-pve.partaa.raw`
    file: String,
    /// `<image_source>debian-13-pve.qcow2.partaa`
    url: String,
}

/// PVE's words when a download's checksum differs (`download_file_from_url`:
/// "checksum mismatch: got 'X' != expect 'Y'").
fn is_checksum_mismatch(exitstatus: &str) -> bool {
    exitstatus.contains("checksum mismatch")
}

fn host_failure(err: &host::Error) -> Outcome {
    let message = chain(err);
    if err.is_transient() {
        StepOutcome::Failed(StepError::transient(message))
    } else {
        StepOutcome::Failed(StepError::permanent(message))
    }
}

impl VmController {
    fn release_download(&self, volume: &str) {
        if let Ok(mut d) = self.shared.downloads.lock() {
            d.remove(volume);
        }
    }

    /// Claims `volume` for this node (`as_` says what for); false when
    /// another node holds it.
    fn claim(&self, volume: &str, as_: Download) -> bool {
        let Ok(mut downloads) = self.shared.downloads.lock() else {
            return false;
        };
        if downloads.contains_key(volume) {
            return false;
        }
        downloads.insert(volume.to_string(), as_);
        true
    }

    /// What some node is doing with `volume`.
    fn download_state(&self, volume: &str) -> Option<Download> {
        self.shared.downloads.lock().ok()?.get(volume).cloned()
    }

    fn set_download(&self, volume: &str, state: Download) {
        if let Ok(mut d) = self.shared.downloads.lock() {
            d.insert(volume.to_string(), state);
        }
    }

    /// Brings the download of a file missing from a storage listing made
    /// at `listed_at` one step on: starts it (once for every node), or
    /// checks the task some node started.
    async fn fetch(
        &self,
        volume: &str,
        url: String,
        filename: String,
        listed_at: Instant,
        sha256: Option<&str>,
    ) -> Fetch {
        match self.download_state(volume) {
            None => {}
            Some(Download::Done(at)) if listed_at <= at => return Fetch::Soon,
            // Downloaded, yet gone from a later listing: fetch it again.
            Some(Download::Done(_)) => self.release_download(volume),
            Some(Download::Starting | Download::Joining) => return Fetch::Pending,
            Some(Download::Task(upid)) => {
                return match tasks::check(self.api.as_ref(), &upid, 20).await {
                    Ok(Check::Running(_)) => Fetch::Pending,
                    Ok(Check::Succeeded(_)) => {
                        self.set_download(volume, Download::Done(Instant::now()));
                        Fetch::Soon
                    }
                    Ok(Check::Failed { exitstatus, .. }) if is_checksum_mismatch(&exitstatus) => {
                        self.release_download(volume);
                        // Downloading again fetches the same bytes.
                        Fetch::Failed(refuse(format!(
                            "download of {volume} failed its SHA-256 check ({exitstatus}); PVE \
                             removed the file. The source's image is not the one its checksum \
                             names: check the release, or site.yaml image_sha256"
                        )))
                    }
                    Ok(Check::Failed { exitstatus, .. }) => {
                        self.release_download(volume);
                        Fetch::Failed(StepOutcome::Failed(StepError::classified(format!(
                            "download of {volume} failed: {exitstatus}"
                        ))))
                    }
                    Err(err) => Fetch::Failed(fail(&err, &format!("check download of {volume}"))),
                };
            }
        }
        if !self.claim(volume, Download::Starting) {
            return Fetch::Pending;
        }
        let request = DownloadUrl {
            url,
            content: "import".into(),
            filename,
            // PVE checks the file and removes it when it differs.
            checksum: sha256.map(|digest| ("sha256".to_string(), digest.to_string())),
            verify_certificates: Some(true),
        };
        match self
            .api
            .download_url(&self.pve_node, &self.image_storage, &request)
            .await
        {
            Ok(upid) => {
                self.set_download(volume, Download::Task(upid));
                Fetch::Pending
            }
            Err(err) => {
                self.release_download(volume);
                Fetch::Failed(fail(&err, &format!("download {}", request.url)))
            }
        }
    }

    /// The import files of the image storage: volid → size.
    async fn import_files(&self) -> Result<HashMap<String, Option<u64>>, Outcome> {
        match self
            .api
            .storage_content(&self.pve_node, &self.image_storage, Some("import"), None)
            .await
        {
            Ok(content) => Ok(content.into_iter().map(|c| (c.volid, c.size)).collect()),
            Err(err) => Err(fail(&err, &format!("list storage {}", self.image_storage))),
        }
    }

    /// Waits for an image being downloaded (or joined), at most the
    /// `download_images` timeout.
    fn await_image(&self, want: &DesiredVm, m: &mut Memory) -> Outcome {
        let limit = self.timing.download_timeout;
        let deadline = *m.deadline.get_or_insert_with(|| Instant::now() + limit);
        if Instant::now() < deadline {
            return StepOutcome::Requeue(m.next_poll(&self.timing));
        }
        m.reset_wait();
        refuse(format!(
            "image {} did not reach storage {} within {} (download_images); raise \
             settings.timeouts.download_images or --download-images-timeout for a slow link",
            want.image,
            self.image_storage,
            humantime::format_duration(limit)
        ))
    }

    pub(super) async fn ensure_image(&self, want: &DesiredVm, m: &mut Memory) -> Outcome {
        let listed_at = Instant::now();
        let files = match self.import_files().await {
            Ok(files) => files,
            Err(out) => return out,
        };
        let listing = Listing { files, listed_at };
        let out = self.ensure_listed(want, &listing, m).await;
        if matches!(out, StepOutcome::Done) {
            m.reset_wait();
        }
        out
    }

    async fn ensure_listed(&self, want: &DesiredVm, listing: &Listing, m: &mut Memory) -> Outcome {
        let image = &want.image;
        let joined = mapping::image_volume(&self.image_storage, image);
        if listing.files.contains_key(&joined) {
            let prefix = format!("{}:import/", self.image_storage);
            let mut leftover: Vec<String> = listing
                .files
                .keys()
                .filter_map(|volid| volid.strip_prefix(&prefix))
                .filter(|file| source::is_part_file(image, file))
                .map(String::from)
                .collect();
            leftover.sort();
            if !leftover.is_empty() {
                self.remove_leftover_parts(want, &joined, leftover).await;
            }
            return StepOutcome::Done;
        }
        match self.layout(want).await {
            Ok(Layout::Whole) => self.ensure_whole_image(want, listing, m, None).await,
            Ok(Layout::Unchecked(why)) => {
                self.ensure_whole_image(want, listing, m, Some(&why)).await
            }
            Ok(Layout::Parts(count)) => self.ensure_split_image(want, count, listing, m).await,
            Ok(Layout::Missing(tried)) => refuse(format!(
                "image {image} is not at its source: neither the whole asset nor a first part \
                 is there ({}); check image_source (or packer_release) in site.yaml, or the \
                 image name",
                tried.join(", ")
            )),
            Err(err) => {
                let message = format!("cannot find out how image {image} ships: {}", chain(&err));
                if err.is_transient() {
                    StepOutcome::Failed(StepError::transient(message))
                } else {
                    StepOutcome::Failed(StepError::permanent(message))
                }
            }
        }
    }

    /// How the source holds `want`'s image: as `image_parts` says, else
    /// asked once for the run (the first node asks, the others wait for
    /// its answer).
    async fn layout(&self, want: &DesiredVm) -> Result<Layout, source::Error> {
        let image = &want.image;
        if let Some(&count) = self.images.parts.get(image) {
            return Ok(Layout::Parts(count));
        }
        let cell = match self.shared.layouts.lock() {
            Ok(mut layouts) => layouts.entry(image.clone()).or_default().clone(),
            // A poisoned table only costs asking again.
            Err(_) => Arc::default(),
        };
        let layout = cell
            .get_or_try_init(|| async {
                let client = self
                    .shared
                    .http
                    .get_or_try_init(|| async { source::client() })
                    .await?;
                let layout = source::discover(client, &self.images.base_url, image).await?;
                match &layout {
                    Layout::Parts(count) => tracing::info!(
                        image = %image, parts = count, source = %self.images.base_url,
                        "the image ships in parts"
                    ),
                    Layout::Unchecked(why) => self.event(
                        &want.name,
                        Level::Warning,
                        Kind::ImageUnchecked,
                        format!(
                            "cannot tell whether image {image} ships whole or in parts ({why}); \
                             asking PVE for the whole asset"
                        ),
                    ),
                    Layout::Whole | Layout::Missing(_) => {}
                }
                Ok::<_, source::Error>(layout)
            })
            .await?;
        Ok(layout.clone())
    }

    /// `unchecked`: why the source could not be asked, for the hint when
    /// PVE cannot download the whole asset either.
    async fn ensure_whole_image(
        &self,
        want: &DesiredVm,
        listing: &Listing,
        m: &mut Memory,
        unchecked: Option<&str>,
    ) -> Outcome {
        let volume = mapping::image_volume(&self.image_storage, &want.image);
        let file = mapping::image_file(&want.image);
        let url = format!("{}{file}", self.images.base_url);
        let sha256 = match self.expected_sha256(want).await {
            Ok(sha256) => sha256,
            Err(out) => return out,
        };
        match (
            self.fetch(&volume, url, file, listing.listed_at, sha256.as_deref())
                .await,
            unchecked,
        ) {
            (Fetch::Pending, _) => self.await_image(want, m),
            (Fetch::Soon, _) => StepOutcome::Requeue(self.timing.poll_min),
            (Fetch::Failed(StepOutcome::Failed(mut err)), Some(why)) => {
                err.message = format!(
                    "{}; homestak could not ask the source itself ({why}), so if the release \
                     ships image {} in parts, list it in site.yaml image_parts",
                    err.message, want.image
                );
                StepOutcome::Failed(err)
            }
            (Fetch::Failed(out), _) => out,
        }
    }

    /// The SHA-256 `want`'s image must have: site.yaml's `image_sha256`,
    /// else the source's `<image>.qcow2.sha256`, found once per run. No
    /// checksum anywhere is `None`, with one `image_unverified` warning per
    /// run; a checksum file that names no digest for the image refuses the
    /// download.
    async fn expected_sha256(&self, want: &DesiredVm) -> Result<Option<String>, Outcome> {
        let image = &want.image;
        if let Some(digest) = self.images.sha256.get(image) {
            return Ok(Some(digest.clone()));
        }
        let cell = match self.shared.checksums.lock() {
            Ok(mut checksums) => checksums.entry(image.clone()).or_default().clone(),
            Err(_) => Arc::default(),
        };
        let found = cell
            .get_or_try_init(|| async {
                let client = self
                    .shared
                    .http
                    .get_or_try_init(|| async { source::client() })
                    .await
                    .map_err(|err| refuse(chain(&err)))?;
                let why = match source::checksum(client, &self.images.base_url, image).await {
                    source::Checksum::Found(digest) => return Ok(Some(digest)),
                    source::Checksum::Malformed(url) => {
                        return Err(refuse(format!(
                            "{url} names no SHA-256 digest for {}: fix the release's checksum \
                             file, or give the digest in site.yaml image_sha256",
                            mapping::image_file(image)
                        )));
                    }
                    source::Checksum::Missing(url) => format!("{url} is not there"),
                    source::Checksum::Unclear(url, why) => format!("{url} gave no answer: {why}"),
                };
                self.event(
                    &want.name,
                    Level::Warning,
                    Kind::ImageUnverified,
                    format!(
                        "image {image} is downloaded unverified: site.yaml image_sha256 does not \
                         list it and {why}"
                    ),
                );
                Ok(None)
            })
            .await?;
        Ok(found.clone())
    }

    /// Records, once per run, that an image in parts is downloaded
    /// without a checksum (parts have none to check against).
    async fn parts_unverified(&self, want: &DesiredVm) {
        let image = &want.image;
        let cell = match self.shared.checksums.lock() {
            Ok(mut checksums) => checksums.entry(image.clone()).or_default().clone(),
            Err(_) => return,
        };
        cell.get_or_init(|| async {
            self.event(
                &want.name,
                Level::Warning,
                Kind::ImageUnverified,
                format!("image {image} ships in parts, which are downloaded unverified"),
            );
            None
        })
        .await;
    }

    async fn ensure_split_image(
        &self,
        want: &DesiredVm,
        count: u32,
        listing: &Listing,
        m: &mut Memory,
    ) -> Outcome {
        let files = &listing.files;
        let image = &want.image;
        if count == 0 || count > source::MAX_PARTS {
            return refuse(format!(
                "site.yaml image_parts gives image {image} {count} parts: give the number of \
                 {}.partaa, .partab, … files its release ships (1 to {}), or leave it out to \
                 have homestak find them",
                mapping::image_file(image),
                source::MAX_PARTS
            ));
        }
        let joined = mapping::image_volume(&self.image_storage, image);
        let named: Option<Vec<Part>> = (0..count)
            .map(|i| {
                let file = source::part_file(image, i)?;
                let asset = source::part_asset(image, i)?;
                Some(Part {
                    volume: format!("{}:import/{file}", self.image_storage),
                    url: format!("{}{asset}", self.images.base_url),
                    file,
                })
            })
            .collect();
        // Unreachable: count was checked against MAX_PARTS above.
        let Some(parts) = named else {
            return refuse(format!("image {image}: cannot name {count} parts"));
        };
        let Some(host) = &self.host_ssh else {
            return refuse(format!(
                "image {image} ships in {count} parts; joining them needs SSH to the PVE host \
                 {}, and its nodes/ file gives no address for it (set api_endpoint)",
                self.pve_node
            ));
        };
        // No gigabytes downloaded for a join that cannot log in.
        if let Err(err) = host.check(image, count) {
            return host_failure(&err);
        }
        if parts.iter().any(|p| !files.contains_key(&p.volume)) {
            self.parts_unverified(want).await;
        }
        let (mut pending, mut soon) = (false, false);
        for part in parts.iter().filter(|p| !files.contains_key(&p.volume)) {
            match self
                .fetch(
                    &part.volume,
                    part.url.clone(),
                    part.file.clone(),
                    listing.listed_at,
                    None,
                )
                .await
            {
                Fetch::Pending => pending = true,
                Fetch::Soon => soon = true,
                Fetch::Failed(out) => return out,
            }
        }
        if soon {
            return StepOutcome::Requeue(self.timing.poll_min);
        }
        if pending {
            return self.await_image(want, m);
        }
        // Every part is there: one node joins, the others wait for it.
        if !self.claim(&joined, Download::Joining) {
            return self.await_image(want, m);
        }
        let expected = parts
            .iter()
            .map(|p| files.get(&p.volume).copied().flatten())
            .sum::<Option<u64>>();
        let out = self
            .join_parts(want, host, count, &joined, &parts, expected)
            .await;
        self.release_download(&joined);
        out
    }

    /// Joins the parts on the host, checks the result through the API,
    /// then removes the parts.
    async fn join_parts(
        &self,
        want: &DesiredVm,
        host: &host::HostSsh,
        count: u32,
        joined: &str,
        parts: &[Part],
        expected: Option<u64>,
    ) -> Outcome {
        let image = &want.image;
        let file = mapping::image_file(image);
        let session = match host.connect(image, count).await {
            Ok(s) => s,
            Err(err) => return host_failure(&err),
        };
        let part_files: Vec<String> = parts.iter().map(|p| p.file.clone()).collect();
        let joined_dir = async {
            let dir = session.directory_of(joined, &file).await?;
            session
                .join(&dir, &part_files, &file, self.timing.task_timeout)
                .await?;
            Ok::<_, host::Error>(dir)
        }
        .await;
        let dir = match joined_dir {
            Ok(dir) => dir,
            Err(err) => {
                session.close().await;
                return host_failure(&err);
            }
        };
        let files = match self.import_files().await {
            Ok(files) => files,
            Err(out) => {
                session.close().await;
                return out;
            }
        };
        let out = match files.get(joined) {
            None => StepOutcome::Failed(StepError::transient(format!(
                "joined {count} parts of {image} on {}, but {joined} is not in storage {}'s \
                 content",
                host.destination, self.image_storage
            ))),
            Some(&Some(got)) if expected.is_some_and(|e| e != got) => {
                // Never import a truncated image: drop it, the parts stay
                // for the next attempt.
                let _ = session.remove(&dir, std::slice::from_ref(&file)).await;
                StepOutcome::Failed(StepError::transient(format!(
                    "joined image {joined} has {got} bytes, but its {count} parts have {}; it \
                     was removed and will be joined again",
                    expected.unwrap_or_default()
                )))
            }
            Some(_) => {
                if let Err(err) = session.remove(&dir, &part_files).await {
                    self.event(
                        &want.name,
                        Level::Warning,
                        Kind::PartsLeft,
                        format!("joined {joined}, but the parts stay: {}", chain(&err)),
                    );
                }
                self.event(
                    &want.name,
                    Level::Info,
                    Kind::ImageJoined,
                    format!(
                        "joined {count} parts of {image} into {joined} on {}",
                        host.destination
                    ),
                );
                StepOutcome::Done
            }
        };
        session.close().await;
        out
    }

    /// Removes parts (file names) an interrupted run left next to the
    /// joined image. Best effort: the image is usable either way.
    async fn remove_leftover_parts(&self, want: &DesiredVm, joined: &str, files: Vec<String>) {
        let Some(host) = &self.host_ssh else { return };
        // Another node may be cleaning up right now.
        if !self.claim(joined, Download::Joining) {
            return;
        }
        let count = u32::try_from(files.len()).unwrap_or(u32::MAX);
        let file = mapping::image_file(&want.image);
        let result = async {
            let session = host.connect(&want.image, count).await?;
            let removed = async {
                let dir = session.directory_of(joined, &file).await?;
                session.remove(&dir, &files).await
            }
            .await;
            session.close().await;
            removed
        }
        .await;
        self.release_download(joined);
        if let Err(err) = result {
            self.event(
                &want.name,
                Level::Warning,
                Kind::PartsLeft,
                format!(
                    "{count} parts of {} are left next to {joined}: {}",
                    want.image,
                    chain(&err)
                ),
            );
        }
    }
}
