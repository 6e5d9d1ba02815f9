# Bad input (issue 12): every case of the issue through the real binaries
# (malformed weights and images, absurd numbers, a copied output directory,
# damaged checkpoints, a bad label, the embedded etcd under mutual TLS ...);
# each must end within seconds with one clear message and a non-zero exit.
# About 45 s on 2 cores; also part of the default run (go test ./e2e/).
# The cases and what the user sees: docs/failures.md, "Bad input".
BADINPUT_LOG ?= $(or $(TMPDIR),/tmp)/ringtrain-badinput.log
.PHONY: test-badinput
test-badinput:
	@$(GO) test -count=1 -timeout 10m -run 'TestBadInput' -v ./e2e/ > $(BADINPUT_LOG) 2>&1; s=$$?; \
		grep -E '^(=== RUN|--- |    badinput_test|PASS|FAIL|ok)' $(BADINPUT_LOG); \
		[ $$s -eq 0 ] || echo "test-badinput failed; full log: $(BADINPUT_LOG)"; exit $$s
