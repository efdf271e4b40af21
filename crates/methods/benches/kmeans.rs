//! k-means hot path: 200,000 vectors of dim 4 into 1,000 centroids, 25 iterations (random init,
//! so the benchmark times Lloyd's iterations, as in the reference figures in the README).

use cqr_methods::kmeans::{KMeansConfig, KMeansInit};
use criterion::{criterion_group, criterion_main, Criterion};
use rand::{Rng, SeedableRng};

fn bench(c: &mut Criterion) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let data: Vec<f32> = (0..200_000 * 4).map(|_| rng.random_range(-1.0..1.0)).collect();
    let cfg = KMeansConfig { k: 1000, max_iter: 25, tol: 0.0, init: KMeansInit::Random, seed: 1 };
    let mut g = c.benchmark_group("kmeans");
    g.sample_size(10);
    g.bench_function("200k_x4_k1000_25it", |b| b.iter(|| cfg.fit(&data, 4).unwrap()));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
