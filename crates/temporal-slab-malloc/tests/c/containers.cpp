// C++ on the preload: operator new/delete (libstdc++ calls malloc/free, and aligned_alloc for
// over-aligned types) through standard containers on several threads, objects handed between
// threads through a shared queue and destroyed there. Links nothing of ours; the test runs it
// with and without LD_PRELOAD and compares the output, which depends only on the workload.
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

struct alignas(64) Line {
    uint64_t words[8];
};

// Over-aligned and larger than any slab class: glibc's aligned_alloc.
struct alignas(256) Block {
    uint64_t words[160];
};

static std::mutex queue_lock;
static std::vector<std::unique_ptr<std::map<std::string, std::vector<int>>>> queue;

static void fail(const char *what) {
    std::fprintf(stderr, "containers: %s\n", what);
    std::exit(1);
}

static uint64_t work(int id) {
    uint64_t sum = 0;
    uint32_t s = 2654435761u * (id + 1);
    for (int round = 0; round < 3000; round++) {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        auto m = std::make_unique<std::map<std::string, std::vector<int>>>();
        for (int k = 0; k < 8; k++) {
            std::string key = "key-" + std::to_string(id) + "-" + std::to_string((s >> k) % 100);
            (*m)[key].assign((s >> (k * 3)) % 40, k + round);
        }
        std::unordered_map<uint32_t, std::string> u;
        for (uint32_t k = 0; k < 16; k++) u[k * s] = std::string(k * 11 % 90, char('a' + k));
        for (auto &kv : u) sum += kv.second.size();
        auto line = std::make_unique<Line>();
        if (reinterpret_cast<uintptr_t>(line.get()) % 64 != 0) fail("over-aligned new");
        line->words[7] = round;
        sum += line->words[7];
        auto block = std::make_unique<Block>();
        if (reinterpret_cast<uintptr_t>(block.get()) % 256 != 0) fail("over-aligned new of a large type");
        block->words[159] = 1;
        sum += block->words[159];
        auto shared = std::make_shared<std::string>(std::string(s % 700, 'x'));
        sum += shared->size();
        {
            std::lock_guard<std::mutex> g(queue_lock);
            queue.push_back(std::move(m));
            // Destroy someone else's map (allocated on another thread, most of the time).
            if (queue.size() > 64) {
                for (auto &kv : *queue.front())
                    for (int v : kv.second) sum += v + kv.first.size();
                queue.erase(queue.begin());
            }
        }
    }
    return sum;
}

int main() {
    std::vector<std::thread> threads;
    std::vector<uint64_t> sums(4);
    for (int i = 0; i < 4; i++) threads.emplace_back([i, &sums] { sums[i] = work(i); });
    for (auto &t : threads) t.join();
    // Which thread destroys which map depends on scheduling, but every map is summed exactly
    // once (when popped, or here), so the total depends only on the workload.
    uint64_t total = 0;
    for (uint64_t s : sums) total += s;
    for (auto &m : queue)
        for (auto &kv : *m)
            for (int v : kv.second) total += v + kv.first.size();
    std::printf("left=%zu total=%llu\n", queue.size(), (unsigned long long)total);
    return 0;
}
