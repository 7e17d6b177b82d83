//! The shipped example configuration loads for this service, and its defaults match it.

use std::path::Path;

#[test]
fn example_config_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/example.yaml");
    let loaded = anomaly_runtime::load::<ingester::Section>(Some(&path))
        .expect("configs/example.yaml loads");
    let defaults = anomaly_runtime::load::<ingester::Section>(None).expect("defaults load");
    assert_eq!(loaded.service.listen, defaults.service.listen);
    assert_eq!(loaded.common.stats, defaults.common.stats);
}
