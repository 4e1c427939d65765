//! The manifest DAG.
