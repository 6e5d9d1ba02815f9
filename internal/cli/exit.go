package cli

// ExitInputError is the exit status of a ringtrain process that stops
// because its input is bad (spec, data, weights, labels): the same error
// would come back after a restart, so a supervisor must not restart it.
// 65 is EX_DATAERR of sysexits.h; Go itself exits 2 on a panic or a fatal
// runtime error (out of memory), and 1 is every other error.
const ExitInputError = 65
