package cluster

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
)

// rootPrefix is the prefix of every ringtrain key.
const rootPrefix = "/ringtrain/"

// stepDigits is the width of the zero-padded step in checkpoint keys.
const stepDigits = 20

// ValidateName checks a job name or member id: 1 to 128 printable
// characters, no '/', no spaces.
func ValidateName(kind, name string) error {
	if name == "" {
		return fmt.Errorf("%w: empty %s", ErrInvalid, kind)
	}
	if len(name) > 128 {
		return fmt.Errorf("%w: %s %.32q... is %d bytes long; at most 128", ErrInvalid, kind, name, len(name))
	}
	for _, r := range name {
		if r == '/' || unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return fmt.Errorf("%w: %s %q contains %q", ErrInvalid, kind, name, r)
		}
	}
	return nil
}

// JobPrefix returns the prefix of all keys of job.
func JobPrefix(job string) string { return rootPrefix + job + "/" }

// MembersPrefix returns the prefix of the member keys of job.
func MembersPrefix(job string) string { return JobPrefix(job) + "members/" }

// MemberKey returns the key of member id in job.
func MemberKey(job, id string) string { return MembersPrefix(job) + id }

// CheckpointsPrefix returns the prefix of the manifest keys of job.
func CheckpointsPrefix(job string) string { return JobPrefix(job) + "checkpoints/" }

// CheckpointKey returns the key of the manifest of step in job.
func CheckpointKey(job string, step int64) string {
	return fmt.Sprintf("%s%0*d", CheckpointsPrefix(job), stepDigits, step)
}

// stepFromKey parses the step out of a checkpoint key.
func stepFromKey(job, key string) (int64, error) {
	s, ok := strings.CutPrefix(key, CheckpointsPrefix(job))
	if !ok {
		return 0, fmt.Errorf("%w: key %q is not a checkpoint key of job %q", ErrInvalid, key, job)
	}
	step, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: checkpoint key %q: %w", ErrInvalid, key, err)
	}
	return step, nil
}
