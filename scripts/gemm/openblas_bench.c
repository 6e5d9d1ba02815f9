// openblas_bench: times cblas_sgemm on the GEMM shapes listed in a file
// (pkg/nn/internal/gemm/testdata/shapes.txt format: name transA transB M N K,
// '#' comments) and prints one line per shape: "name GFLOPS", the median over
// REPS timed samples (each >= 2 ms of calls) after warm-up. With NAME, only
// that shape runs. Row-major, alpha = 1, beta = 0,
// tight leading dimensions, like the Go benchmark.
//
// Build: gcc -O2 -o openblas_bench openblas_bench.c -lopenblas
// Run:   OPENBLAS_CORETYPE=SapphireRapids OPENBLAS_NUM_THREADS=2 ./openblas_bench shapes.txt [REPS [NAME]]
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b) {
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static float *randf(size_t n) {
	float *p = malloc(n * sizeof *p);
	if (!p) {
		fprintf(stderr, "openblas_bench: out of memory\n");
		exit(1);
	}
	for (size_t i = 0; i < n; i++) p[i] = (float)rand() / RAND_MAX * 2 - 1;
	return p;
}

int main(int argc, char **argv) {
	if (argc < 2) {
		fprintf(stderr, "usage: %s SHAPES_FILE [REPS [NAME]]\n", argv[0]);
		return 2;
	}
	int reps = argc > 2 ? atoi(argv[2]) : 7;
	const char *only = argc > 3 ? argv[3] : NULL;
	int found = 0;
	if (reps < 1) reps = 1;
	FILE *f = fopen(argv[1], "r");
	if (!f) {
		perror(argv[1]);
		return 1;
	}
	char line[512];
	double *t = malloc(reps * sizeof *t);
	while (fgets(line, sizeof line, f)) {
		char name[128];
		int ta, tb, m, n, k;
		if (line[0] == '#' || strspn(line, " \t\r\n") == strlen(line)) continue;
		if (sscanf(line, "%127s %d %d %d %d %d", name, &ta, &tb, &m, &n, &k) != 6) {
			fprintf(stderr, "openblas_bench: bad line: %s", line);
			return 1;
		}
		if (only && strcmp(only, name) != 0) continue;
		found++;
		float *a = randf((size_t)m * k), *b = randf((size_t)k * n), *c = randf((size_t)m * n);
		int lda = ta ? m : k, ldb = tb ? k : n;
		enum CBLAS_TRANSPOSE opa = ta ? CblasTrans : CblasNoTrans, opb = tb ? CblasTrans : CblasNoTrans;
		cblas_sgemm(CblasRowMajor, opa, opb, m, n, k, 1.0f, a, lda, b, ldb, 0.0f, c, n);
		double flop = 2.0 * m * n * k;
		// Each timed sample runs enough calls to last >= 2 ms.
		int inner = 1;
		double t0 = now();
		cblas_sgemm(CblasRowMajor, opa, opb, m, n, k, 1.0f, a, lda, b, ldb, 0.0f, c, n);
		double one = now() - t0;
		if (one < 2e-3) inner = (int)(2e-3 / (one > 1e-9 ? one : 1e-9)) + 1;
		for (int r = 0; r < reps; r++) {
			t0 = now();
			for (int i = 0; i < inner; i++)
				cblas_sgemm(CblasRowMajor, opa, opb, m, n, k, 1.0f, a, lda, b, ldb, 0.0f, c, n);
			t[r] = (now() - t0) / inner;
		}
		qsort(t, reps, sizeof *t, cmp);
		printf("%s %.2f\n", name, flop / t[reps / 2] * 1e-9);
		fflush(stdout);
		free(a);
		free(b);
		free(c);
	}
	free(t);
	fclose(f);
	if (only && !found) {
		fprintf(stderr, "openblas_bench: no shape named %s\n", only);
		return 1;
	}
	return 0;
}
