"""One module per check; each exposes `check(ctx) -> CheckResult` plus the pure pieces its tests drive."""
