//! The CUDA C sources, embedded in the binary: one file per kernel family, each compiled with
//! `cu/common.cuh` in front of it.

/// The shared header every source starts with.
pub const COMMON: &str = include_str!("cu/common.cuh");

/// A kernel family: its name (the file stem) and CUDA C text.
#[derive(Clone, Copy, Debug)]
pub struct Source {
    /// The file stem, e.g. `elementwise`.
    pub name: &'static str,
    /// The file's text, without the common header.
    pub code: &'static str,
}

macro_rules! sources {
    ($($name:literal),* $(,)?) => {
        /// Every kernel family the crate compiles.
        pub const SOURCES: &[Source] = &[
            $(Source { name: $name, code: include_str!(concat!("cu/", $name, ".cu")) },)*
        ];
    };
}

sources![
    "elementwise",
    "reduce",
    "norm",
    "matmul",
    "gemm_tc",
    "conv",
    "index",
    "pool",
    "optim"
];

impl Source {
    /// The family called `name`.
    pub fn named(name: &str) -> Option<Source> {
        SOURCES.iter().copied().find(|s| s.name == name)
    }

    /// The text NVRTC compiles: the common header, then the file.
    pub fn full_text(&self) -> String {
        format!("{COMMON}\n#line 1 \"{}.cu\"\n{}", self.name, self.code)
    }

    /// A 64-bit FNV-1a hash of the full text: the compile cache's key (with the arch).
    pub fn hash(&self) -> u64 {
        self.full_text()
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325, |h, b| {
                (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
            })
    }
}
