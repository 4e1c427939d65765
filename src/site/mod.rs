//! Site-config discovery, loading and the ConfigResolver.
