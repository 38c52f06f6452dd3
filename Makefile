# The two commands a new user needs: `make demo` and `make test`. Both install missing Debian
# packages first (scripts/bootstrap.sh), then build.
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all bootstrap build demo test test-unit check package clean

all: build

bootstrap:
	@./scripts/bootstrap.sh

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS)

build: bootstrap $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

demo: build
	./scripts/demo.sh $(BUILD)

test: build
	cd $(BUILD) && ctest -j $(JOBS) --output-on-failure

test-unit: build
	cd $(BUILD) && ctest -j $(JOBS) -L unit --output-on-failure

# clang with thread-safety analysis as errors, plus ASan and UBSan, over unit and integration
# tests (build-check); a short run of each fuzzer (build-check/fuzz-build); and ThreadSanitizer
# over the unit tests labelled tsan, those free of torch and gRPC calls (build-tsan).
check: bootstrap
	CC=clang CXX=clang++ cmake -S . -B build-check -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DFEDGE_THREAD_SAFETY=ON -DFEDGE_SANITIZE=ON
	cmake --build build-check -j $(JOBS)
	cd build-check && ASAN_OPTIONS=detect_leaks=0 ctest -j $(JOBS) -L 'unit|integration' --output-on-failure
	cd build-check && ctest -L fuzz --output-on-failure
	CC=clang CXX=clang++ cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFEDGE_TSAN=ON
	cmake --build build-tsan -j $(JOBS) --target tsan_tests
	cd build-tsan && TSAN_OPTIONS=halt_on_error=1 ctest -j $(JOBS) -L tsan --output-on-failure

# The .deb packages fedge-edge, fedge-cloud and fedgectl (CPack, cmake/Packaging.cmake), into
# $(BUILD)/packages/. Builds only the three binaries, not the tests.
package: bootstrap $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS) --target fedge-cloud fedge-edge fedgectl
	cd $(BUILD) && cpack -G DEB -B $(abspath $(BUILD))/packages

clean:
	rm -rf $(BUILD) build-check build-tsan
