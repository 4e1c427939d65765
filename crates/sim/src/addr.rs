//! Loopback addresses for simulated VMs.
//!
//! Every VM gets its own address in 127.0.0.0/8 (all of it is on `lo` in
//! Linux, no root needed), where later its SSH server and nested PVE API
//! listen. Several simulators may run at once (parallel tests, nested
//! tiers), so each claims whole /24 blocks `127.N.M.0/24` (N ≥ 32, away
//! from the 127.0.x.y addresses people type) by binding a TCP listener on
//! `127.N.M.0:47006`: the kernel then guarantees no other simulator holds
//! the same block, and the claim ends with the process.

use std::collections::{BTreeSet, HashSet};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};

use rand::Rng;

/// Port of the claim listeners.
pub const CLAIM_PORT: u16 = 47006;

/// No free block could be claimed.
#[derive(Debug, thiserror::Error)]
#[error("cannot claim a free 127.N.M.0/24 address block for VMs after {attempts} attempts")]
pub struct ClaimError {
    attempts: u32,
}

/// The blocks one simulator holds.
#[derive(Debug, Default)]
pub struct AddrPool {
    blocks: Vec<(u8, u8, TcpListener)>,
    /// The address handed out last: [`AddrPool::allocate_next`] tries the
    /// one after it first.
    last: Option<Ipv4Addr>,
    /// Every address handed out or [noted](AddrPool::note) (not forgotten
    /// when its VM goes): an address not in here is free for sure.
    seen: HashSet<Ipv4Addr>,
}

impl AddrPool {
    /// Claims one random free block.
    pub fn claim_any(&mut self) -> Result<(u8, u8), ClaimError> {
        let mut rng = rand::rng();
        for _ in 0..512 {
            let (n, m) = (rng.random_range(32..=254u8), rng.random::<u8>());
            if self.try_claim(n, m) {
                return Ok((n, m));
            }
        }
        Err(ClaimError { attempts: 512 })
    }

    /// Claims `127.n.m.0/24` if free (or already ours).
    pub fn try_claim(&mut self, n: u8, m: u8) -> bool {
        if self.blocks.iter().any(|(a, b, _)| (*a, *b) == (n, m)) {
            return true;
        }
        let addr = SocketAddr::from((Ipv4Addr::new(127, n, m, 0), CLAIM_PORT));
        match TcpListener::bind(addr) {
            Ok(l) => {
                self.blocks.push((n, m, l));
                true
            }
            Err(_) => false,
        }
    }

    /// Whether `ip` lies in a block we hold.
    pub fn owns(&self, ip: Ipv4Addr) -> bool {
        let o = ip.octets();
        o[0] == 127 && self.blocks.iter().any(|(n, m, _)| (*n, *m) == (o[1], o[2]))
    }

    /// The first free address (host 1..=254) not in `used`, claiming a new
    /// block when all held ones are full.
    pub fn allocate(&mut self, used: &BTreeSet<Ipv4Addr>) -> Result<Ipv4Addr, ClaimError> {
        loop {
            for (n, m, _) in &self.blocks {
                for host in 1..=254u8 {
                    let ip = Ipv4Addr::new(127, *n, *m, host);
                    if !used.contains(&ip) {
                        self.last = Some(ip);
                        self.seen.insert(ip);
                        return Ok(ip);
                    }
                }
            }
            self.claim_any()?;
        }
    }

    /// Like [`AddrPool::allocate`], but first tries the address after the
    /// last one handed out: free for sure when never handed out, else
    /// `in_use` is asked about it. `used` (every address in use, costly to
    /// gather with many VMs) is built only when that address is taken or
    /// the pool has no such address.
    pub fn allocate_next(
        &mut self,
        in_use: impl Fn(Ipv4Addr) -> bool,
        used: impl FnOnce() -> BTreeSet<Ipv4Addr>,
    ) -> Result<Ipv4Addr, ClaimError> {
        if let Some(ip) = self.last.and_then(|l| self.after(l))
            && (!self.seen.contains(&ip) || !in_use(ip))
        {
            self.last = Some(ip);
            self.seen.insert(ip);
            return Ok(ip);
        }
        self.allocate(&used())
    }

    /// Records that a VM holds `ip` (one loaded with the world).
    pub fn note(&mut self, ip: Ipv4Addr) {
        self.seen.insert(ip);
    }

    /// The host address after `ip` in the same block, if there is one.
    fn after(&self, ip: Ipv4Addr) -> Option<Ipv4Addr> {
        let [a, n, m, host] = ip.octets();
        (host < 254 && self.owns(ip)).then(|| Ipv4Addr::new(a, n, m, host + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_pools_never_share_a_block() {
        let mut a = AddrPool::default();
        let (n, m) = a.claim_any().unwrap();
        let mut b = AddrPool::default();
        assert!(
            !b.try_claim(n, m),
            "a claimed block must not be claimable twice"
        );
        let ip = a.allocate(&BTreeSet::new()).unwrap();
        assert_eq!(ip, Ipv4Addr::new(127, n, m, 1));
        assert!(a.owns(ip));
        assert!(!b.owns(ip));
    }

    #[test]
    fn full_blocks_spill_into_a_new_one() {
        let mut a = AddrPool::default();
        let (n, m) = a.claim_any().unwrap();
        let used: BTreeSet<Ipv4Addr> = (1..=254u8).map(|h| Ipv4Addr::new(127, n, m, h)).collect();
        let ip = a.allocate(&used).unwrap();
        assert_ne!((ip.octets()[1], ip.octets()[2]), (n, m));
        assert!(a.owns(ip));
    }

    #[test]
    fn next_fit_asks_only_about_addresses_handed_out_before() {
        let mut a = AddrPool::default();
        let first = a.allocate(&BTreeSet::new()).unwrap();
        let [_, n, m, _] = first.octets();
        let held = Ipv4Addr::new(127, n, m, 2);
        a.note(held);
        // .2 is held by a VM loaded with the world: asked about, skipped
        // by the first-fit fallback.
        let ip = a
            .allocate_next(|ip| ip == held, || BTreeSet::from([first, held]))
            .unwrap();
        assert_eq!(ip, Ipv4Addr::new(127, n, m, 3));
        // .4 was never handed out: taken without asking.
        let ip = a
            .allocate_next(|_| panic!("asked about a fresh address"), BTreeSet::new)
            .unwrap();
        assert_eq!(ip, Ipv4Addr::new(127, n, m, 4));
    }
}
