"""Task suites: minimal pairs whose circuits are enumerated."""
