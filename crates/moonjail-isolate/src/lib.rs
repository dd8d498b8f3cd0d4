//! Linux isolation layer (work in progress).
