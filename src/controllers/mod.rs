//! Controllers, one per node kind. Filled in by the converge work.
