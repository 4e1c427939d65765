//! Manifest model: schema v1 levels and v2 node trees.
