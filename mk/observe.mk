# The live view of a job (issue 17): dashboard, Prometheus metrics, health.
.PHONY: test-observe

# Real parts: Debian's chromium (driven by chromedp) loads the dashboard of
# a running 2-worker job and sees the loss curve grow and a killed worker
# leave; Debian's prometheus scrapes the coordinator and both workers and
# PromQL returns images/s and the failure counter that moved after the
# kill; promtool checks every /metrics page. Installs both packages when
# apt-get is there and they are missing. The screenshot lands in
# docs/observe-dashboard.png. About 2 minutes on 2 cores.
OBSERVE_SCREENSHOT ?= $(abspath docs/observe-dashboard.png)
test-observe:
	@command -v chromium >/dev/null && command -v prometheus >/dev/null || \
		{ command -v apt-get >/dev/null && apt-get install -y -qq chromium prometheus >/dev/null; } || \
		echo "test-observe: chromium or prometheus missing; their tests will skip"
	@log=$$(mktemp); RINGTRAIN_OBSERVE_SCREENSHOT=$(OBSERVE_SCREENSHOT) \
		$(GO) test -tags observe -count=1 -timeout 10m -v -run 'TestDashboardInBrowser|TestPrometheusScrapesJob|TestDashboardShowsDeviceMemory' ./e2e/ ./pkg/observe/ > $$log 2>&1; \
		rc=$$?; grep -E '^(=== RUN|--- |PASS|FAIL|ok)|^    ' $$log; rm -f $$log; exit $$rc

# What the dashboard and the metrics cost the step: the same 2-worker job
# with --http off and on (an event-stream client and a 1 s scrape of every
# /metrics page), interleaved; ends with "observe: off A images/s, on B
# images/s (...), on/off R (...)". ROUNDS=n (default 4); about 3 minutes.
.PHONY: bench-observe
bench-observe:
	GO=$(GO) scripts/bench/observe.sh
