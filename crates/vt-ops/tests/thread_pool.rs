//! `vt_ops::in_thread_pool`: its own process (this file), so the global pool is built here.

use candle_core::{Device, Tensor, Var};

/// Recursion `depth` frames deep with a 4 KiB array in each: `depth` × 4 KiB of stack.
#[inline(never)]
fn deep(depth: usize) -> u64 {
    let frame = std::hint::black_box([depth as u8; 4096]);
    match depth {
        0 => frame[0] as u64,
        _ => deep(depth - 1) + frame[4095] as u64,
    }
}

#[test]
fn runs_on_a_pool_thread_with_a_deep_stack() {
    assert!(
        rayon::current_thread_index().is_none(),
        "the test starts outside the pool"
    );
    let (index, nested) = vt_ops::in_thread_pool(|| {
        // a nested call runs where it is
        let outer = rayon::current_thread_index();
        (outer, vt_ops::in_thread_pool(rayon::current_thread_index))
    });
    assert!(index.is_some(), "the closure ran outside rayon's pool");
    assert_eq!(index, nested);
    // 16 MiB of stack: a default 2 MiB thread would overflow
    let sum = vt_ops::in_thread_pool(|| deep(4096));
    assert_eq!(sum, (1..=4096u64).map(|d| d % 256).sum::<u64>());
    // a parallel op and its backward give the same result inside the pool as outside
    let x = Var::from_tensor(&Tensor::arange(0f32, 4096.0, &Device::Cpu).unwrap()).unwrap();
    let grad = |x: &Var| {
        let y = vt_ops::softmax(&x.reshape((64, 64)).unwrap(), 1).unwrap();
        let g = (y.sqr().unwrap().sum_all().unwrap()).backward().unwrap();
        g.get(x).unwrap().to_vec1::<f32>().unwrap()
    };
    assert_eq!(vt_ops::in_thread_pool(|| grad(&x)), grad(&x));
}
