// Package causes is one error shape for a run that failed by its parts:
// it wraps a package's sentinel (errors.Is keeps working) and carries the
// errors of the parts, so that the command can classify the whole run
// (ferry's --json kind is "network" when every part failed on the network).
package causes

// Error is a failure that stands for the errors of its parts.
type Error struct {
	msg      string
	sentinel error
	causes   []error
}

// New returns an error with text msg that unwraps to sentinel and stands
// for causes.
func New(sentinel error, msg string, causes []error) *Error {
	return &Error{msg: msg, sentinel: sentinel, causes: causes}
}

func (e *Error) Error() string { return e.msg }

// Unwrap returns the sentinel.
func (e *Error) Unwrap() error { return e.sentinel }

// Causes returns the errors the failure stands for.
func (e *Error) Causes() []error { return e.causes }
