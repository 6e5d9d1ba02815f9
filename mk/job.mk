# The distributed job end to end (issues 5 and 6): real processes.
.PHONY: smoke test-e2e test-e2e-short chaos

SMOKE_DIR ?= $(or $(TMPDIR),/tmp)/ringtrain-smoke
SMOKE_FLAGS ?= --dataset synthetic --synthetic-size 4096 --epochs 3 --batch 64 --width 0.25 --threads 1

# coordinator + 2 local workers, synthetic data, 192 steps; the last line is
# "smoke: epochs E, steps S, test accuracy A, images/s R".
smoke:
	$(GO) build -o bin/ ./cmd/coordinator ./cmd/worker
	rm -rf $(SMOKE_DIR)
	bin/coordinator --workers 2 --no-progress --output $(SMOKE_DIR) $(SMOKE_FLAGS) 2> $(SMOKE_DIR).log || (tail -20 $(SMOKE_DIR).log; exit 1)
	@python3 -c 'import json,sys; h=json.load(open(sys.argv[1]))["epochs"]; e=h[-1]; print("smoke: epochs %d, steps %d, test accuracy %.4f, images/s %.0f" % (e["epoch"], e["steps"], e["val_acc"], sum(x["images_per_sec"] for x in h)/len(h)))' $(SMOKE_DIR)/history.json

# Every e2e test (about 4 minutes on 2 cores); -short skips the long ones.
test-e2e:
	$(GO) test -count=1 -timeout 15m -v ./e2e/
test-e2e-short:
	$(GO) test -count=1 -short ./e2e/

# 20 seeded kills (SIGKILL, every fourth a SIGSTOP) of random workers in a
# 4-worker run; ends with "chaos: kills K, detect median Xs, recover median
# Ys, lost L, duplicated D". CHAOS_SEED=n replays another schedule.
CHAOS_SEED ?= 1
CHAOS_KILLS ?= 20
chaos:
	RINGTRAIN_CHAOS=1 RINGTRAIN_CHAOS_SEED=$(CHAOS_SEED) RINGTRAIN_CHAOS_KILLS=$(CHAOS_KILLS) \
		$(GO) test -count=1 -timeout 20m -run TestChaos -v ./e2e/ | tee $(or $(TMPDIR),/tmp)/ringtrain-chaos.log | grep -E '^(chaos:|--- |FAIL|ok|PASS)|audit'
