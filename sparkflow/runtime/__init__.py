"""Running one try of one task: state RUNNING -> outcome, with log, heartbeat, XCom and timeout."""
