//! Software module backends: Lmod's spider, and the facility configuration's
//! own list. The capability (capabilities/software) merges them per resource.

pub mod config;
pub mod lmod;
