"""Process-level helpers at the bottom of the stack: signals, fault injection, third-party quieting, paths."""
