//! The CXL topology model.
