//! A small but valid qcow2 (version 3) image, as packer's qemu builder
//! leaves one: header, refcount table and block, an L1 table, and no data
//! clusters (the guest reads zeros). `qemu-img info` reads it; the virtual
//! size is in the header, where the storage view finds it again when the
//! image is copied into a storage.

const MAGIC: &[u8; 4] = b"QFI\xfb";
const CLUSTER_BITS: u32 = 16;
const CLUSTER: u64 = 1 << CLUSTER_BITS;
/// Header size of a version 3 image without extensions.
const HEADER_LEN: u32 = 104;

/// The image bytes for `virtual_size` bytes of guest disk (rounded up to
/// 512). `None` when the L1 table would not fit one cluster (over 4 TiB).
pub fn empty_image(virtual_size: u64) -> Option<Vec<u8>> {
    let virtual_size = virtual_size.div_ceil(512) * 512;
    // Each L2 table maps CLUSTER/8 clusters.
    let l2_span = CLUSTER * (CLUSTER / 8);
    let l1_entries = virtual_size.div_ceil(l2_span);
    if l1_entries * 8 > CLUSTER {
        return None;
    }
    // Clusters: 0 header, 1 refcount table, 2 refcount block, 3 L1 table.
    let mut image = vec![0u8; 4 * CLUSTER as usize];
    let mut h = Vec::with_capacity(HEADER_LEN as usize);
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&3u32.to_be_bytes()); // version
    h.extend_from_slice(&0u64.to_be_bytes()); // backing file offset
    h.extend_from_slice(&0u32.to_be_bytes()); // backing file size
    h.extend_from_slice(&CLUSTER_BITS.to_be_bytes());
    h.extend_from_slice(&virtual_size.to_be_bytes());
    h.extend_from_slice(&0u32.to_be_bytes()); // no encryption
    h.extend_from_slice(&(l1_entries as u32).to_be_bytes());
    h.extend_from_slice(&(3 * CLUSTER).to_be_bytes()); // L1 table offset
    h.extend_from_slice(&CLUSTER.to_be_bytes()); // refcount table offset
    h.extend_from_slice(&1u32.to_be_bytes()); // refcount table clusters
    h.extend_from_slice(&0u32.to_be_bytes()); // snapshots
    h.extend_from_slice(&0u64.to_be_bytes()); // snapshots offset
    h.extend_from_slice(&0u64.to_be_bytes()); // incompatible features
    h.extend_from_slice(&0u64.to_be_bytes()); // compatible features
    h.extend_from_slice(&0u64.to_be_bytes()); // autoclear features
    h.extend_from_slice(&4u32.to_be_bytes()); // refcount order: 16 bits
    h.extend_from_slice(&HEADER_LEN.to_be_bytes());
    image[..h.len()].copy_from_slice(&h);
    // Header extensions end marker (type 0, length 0) follows the header:
    // already zeros. Refcount table entry 0 → the refcount block.
    let table = CLUSTER as usize;
    image[table..table + 8].copy_from_slice(&(2 * CLUSTER).to_be_bytes());
    // Each of the four clusters is used once.
    let block = 2 * CLUSTER as usize;
    for n in 0..4 {
        image[block + 2 * n..block + 2 * n + 2].copy_from_slice(&1u16.to_be_bytes());
    }
    Some(image)
}

/// The virtual size in a qcow2 header, if `head` starts with one.
pub fn virtual_size(head: &[u8]) -> Option<u64> {
    if head.len() < 32 || &head[..4] != MAGIC {
        return None;
    }
    let bytes: [u8; 8] = head[24..32].try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_keeps_the_virtual_size() {
        let image = empty_image(3 << 30).unwrap();
        assert_eq!(image.len(), 4 * CLUSTER as usize);
        assert_eq!(virtual_size(&image), Some(3 << 30));
        assert_eq!(virtual_size(b"not an image, just some bytes here"), None);
        assert!(empty_image(u64::MAX / 2).is_none());
    }

    /// qemu-img, when installed, agrees that the image is valid.
    #[test]
    fn qemu_img_checks_the_image() {
        let Some(qemu_img) = std::env::var_os("PATH").and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("qemu-img"))
                .find(|p| p.is_file())
        }) else {
            println!("SKIPPED: qemu-img is not installed");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x.qcow2");
        std::fs::write(&file, empty_image((2 << 30) + 1000).unwrap()).unwrap();
        let check = std::process::Command::new(&qemu_img)
            .arg("check")
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "{}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        let info = std::process::Command::new(&qemu_img)
            .args(["info", "--output=json"])
            .arg(&file)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&info.stdout);
        assert!(text.contains("\"virtual-size\": 2147484672"), "{text}");
        assert!(text.contains("\"format\": \"qcow2\""), "{text}");
    }
}
