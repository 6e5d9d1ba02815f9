# Bad input (issue 12): every case of the issue through the real binaries
# (malformed weights and images, absurd numbers, a copied output directory,
# damaged checkpoints, a bad label, the embedded etcd under mutual TLS ...);
# each must end within seconds with one clear message and a non-zero exit.
# About 45 s on 2 cores; also part of the default run (go test ./e2e/).
# The cases and what the user sees: docs/failures.md, "Bad input".
.PHONY: test-badinput
test-badinput:
	$(GO) test -count=1 -timeout 10m -run 'TestBadInput' -v ./e2e/ | grep -E '^(=== RUN|--- |    badinput_test|PASS|FAIL|ok)'
