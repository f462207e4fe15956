#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    println!("tandem {}", env!("CARGO_PKG_VERSION"));
}
