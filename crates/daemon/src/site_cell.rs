//! The loaded site-config, shared by every request and the reconciler, and
//! swapped wholesale on reload (SIGHUP, a new revision): requests in flight
//! keep the `Arc<Site>` they started with.

use std::sync::{Arc, RwLock};

use homestak_core::site::{Site, loader};

/// A swappable `Arc<Site>`.
#[derive(Debug, Clone)]
pub struct SiteCell(Arc<RwLock<Arc<Site>>>);

impl SiteCell {
    pub fn new(site: Site) -> SiteCell {
        SiteCell(Arc::new(RwLock::new(Arc::new(site))))
    }

    /// The site as loaded now.
    pub fn get(&self) -> Arc<Site> {
        Arc::clone(&self.0.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Loads the site-config again and swaps it in. On error the old one
    /// stays in use.
    pub fn reload(&self) -> Result<(), loader::Error> {
        let fresh = self.get().reload()?;
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(fresh);
        Ok(())
    }
}
