"""Why an XDR walk stopped: codes shared by the compiled walker, its pure twin
and the generator that writes both, and the message each stands for."""

E_TRUNCATED = 1
E_UNKNOWN_ARM = 2
E_TOO_LONG = 3
E_PADDING = 4
E_BOOL = 5
E_DEPTH = 6

WALK_ERRORS = {
    E_TRUNCATED: "input ends before the value does",
    E_UNKNOWN_ARM: "unknown union arm or enum value",
    E_TOO_LONG: "length or count above the declared maximum",
    E_PADDING: "non-zero padding",
    E_BOOL: "bool or optional flag not 0 or 1",
    E_DEPTH: "nesting deeper than the depth limit",
}
