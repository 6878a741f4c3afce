//! Sweep expansion: every stage instance is one consistent combination of sweep values, and
//! stages that share an upstream instance share it (a diamond does not multiply instances).

use medgen_lang::check::check_source;
use medgen_stdlib::StdRegistry;

const DIAMOND: &str = r#"
pipeline diamond

dataset brain = phantom { volumes = 16  shape = [8, 32, 32] }

stage vae = compress(brain) {
  sweep model in [vae(dims: 2, channels: [16, 32], latent_channels: 4), vae(dims: 2, channels: [16, 32], latent_channels: 8)]
}

stage latents = encode(vae, brain)

stage ldm = diffuse(latents) {
  mode      = dual
  model     = unet(channels: [16, 32], attention: [false, false])
  warmup    = 1
  grad_clip = 1.0
  sweep lr in [1e-4, 5e-5]
}

stage gen = sample(ldm, decoder: vae, conditions: brain.test) { count = 2 }
"#;

fn names(stage: &str) -> Vec<String> {
    let report = check_source("diamond.mg", DIAMOND, &[], &StdRegistry::new());
    let rendered: Vec<String> = report.diagnostics.iter().map(|d| d.render(&report.sources, false)).collect();
    let pipeline = report.pipeline.unwrap_or_else(|| panic!("{}", rendered.join("\n")));
    let stage = pipeline.stage(stage).expect("stage exists");
    stage.instances.iter().map(|i| i.name(&stage.name)).collect()
}

#[test]
fn sweeps_multiply_along_the_graph_but_diamonds_stay_consistent() {
    assert_eq!(names("brain"), ["brain"]);
    assert_eq!(names("vae"), ["vae[model.latent_channels=4]", "vae[model.latent_channels=8]"]);
    assert_eq!(names("latents"), ["latents[vae.model.latent_channels=4]", "latents[vae.model.latent_channels=8]"]);
    // `gen` reaches `vae` twice (through `ldm` and as its decoder): 2 x 2 instances, not 2 x 2 x 2.
    assert_eq!(
        names("gen"),
        [
            "gen[vae.model.latent_channels=4, ldm.lr=1e-4]",
            "gen[vae.model.latent_channels=4, ldm.lr=5e-5]",
            "gen[vae.model.latent_channels=8, ldm.lr=1e-4]",
            "gen[vae.model.latent_channels=8, ldm.lr=5e-5]",
        ]
    );
}

#[test]
fn each_instance_derives_its_own_channels() {
    let report = check_source("diamond.mg", DIAMOND, &[], &StdRegistry::new());
    let pipeline = report.pipeline.expect("checks clean");
    let ldm = pipeline.stage("ldm").expect("ldm");
    let channels: Vec<i64> = ldm
        .instances
        .iter()
        .map(|i| i.outputs.get_value("in_channels").and_then(|v| v.as_i64()).expect("in_channels"))
        .collect();
    // dual mode on 4 or 8 latent channels, plus the mask.
    assert_eq!(channels, [5, 5, 9, 9]);
}
