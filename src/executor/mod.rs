//! The DAG executor.
