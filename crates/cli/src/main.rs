fn main() {
    println!("memhp");
}
