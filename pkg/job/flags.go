package job

import (
	"strings"

	"github.com/spf13/pflag"
)

// BindFlags registers one flag per spec field on fs, bound to s. Flag
// names are the YAML keys with "." and "_" turned into "-" where that
// reads better (model.arch -> --model, data.dataset -> --dataset).
func BindFlags(fs *pflag.FlagSet, s *Spec) {
	fs.StringVar(&s.Name, "job", s.Name, "job name (etcd keys, logs) [yaml: name]")
	fs.StringVar(&s.Model.Arch, "model", s.Model.Arch, "resnet18|resnet34|resnet50|resnet101|resnet152 [yaml: model.arch]")
	fs.StringVar(&s.Model.Stem, "stem", s.Model.Stem, "imagenet (7x7/2 conv + max-pool, the tutorial's) | cifar (3x3/1) [yaml: model.stem]")
	fs.Float64Var(&s.Model.Width, "width", s.Model.Width, "channel width multiplier [yaml: model.width]")
	fs.IntVar(&s.Model.Classes, "classes", s.Model.Classes, "output classes (0 = the dataset's) [yaml: model.classes]")
	fs.Float32Var(&s.Model.Dropout, "dropout", s.Model.Dropout, "dropout before the classifier [yaml: model.dropout]")
	fs.StringVar(&s.Data.Dataset, "dataset", s.Data.Dataset, "cifar10 | synthetic | folder [yaml: data.dataset]")
	fs.StringVar(&s.Data.Dir, "data-dir", s.Data.Dir, "data directory (CIFAR-10 is downloaded here when missing) [yaml: data.dir]")
	fs.StringVar(&s.Data.Folder, "folder", s.Data.Folder, "image folder root/<class>/*.png|jpg (dataset folder) [yaml: data.folder]")
	fs.IntVar(&s.Data.ImageSize, "image-size", s.Data.ImageSize, "image folder: resize/crop to this size [yaml: data.image_size]")
	fs.BoolVar(&s.Data.Augment, "augment", s.Data.Augment, "random crop + horizontal flip [yaml: data.augment]")
	fs.BoolVar(&s.Data.Shuffle, "shuffle", s.Data.Shuffle, "shuffle every epoch (false: a deterministic order) [yaml: data.shuffle]")
	fs.BoolVar(&s.Data.DropLast, "drop-last", s.Data.DropLast, "drop each epoch's last partial batch [yaml: data.drop_last]")
	fs.StringVar(&s.Data.Mirror, "cifar-mirror", s.Data.Mirror, "CIFAR-10 archive URL or local .tar.gz to use instead of the official download [yaml: data.mirror]")
	fs.StringVar(&s.Data.MirrorMD5, "cifar-mirror-md5", s.Data.MirrorMD5, "MD5 of the mirror's archive [yaml: data.mirror_md5]")
	fs.BoolVar(&s.Data.Offline, "offline", s.Data.Offline, "never download [yaml: data.offline]")
	fs.IntVar(&s.Data.SyntheticSize, "synthetic-size", s.Data.SyntheticSize, "training samples of the synthetic dataset [yaml: data.synthetic_size]")
	fs.IntVar(&s.Epochs, "epochs", s.Epochs, "epochs [yaml: epochs]")
	fs.IntVar(&s.MaxSteps, "max-steps", s.MaxSteps, "stop after this many steps (0 = no limit) [yaml: max_steps]")
	fs.IntVar(&s.GlobalBatch, "batch", s.GlobalBatch, "global batch size over all workers [yaml: global_batch]")
	fs.StringVar(&s.Optimizer.Name, "optimizer", s.Optimizer.Name, "sgd | adam | adamw | adagrad | rmsprop [yaml: optimizer.name]")
	fs.Float64Var(&s.Optimizer.LR, "lr", s.Optimizer.LR, "learning rate [yaml: optimizer.lr]")
	fs.Float64Var(&s.Optimizer.Momentum, "momentum", s.Optimizer.Momentum, "momentum (sgd, rmsprop) [yaml: optimizer.momentum]")
	fs.Float64Var(&s.Optimizer.Dampening, "dampening", s.Optimizer.Dampening, "sgd dampening [yaml: optimizer.dampening]")
	fs.BoolVar(&s.Optimizer.Nesterov, "nesterov", s.Optimizer.Nesterov, "sgd nesterov momentum [yaml: optimizer.nesterov]")
	fs.Float64Var(&s.Optimizer.WeightDecay, "weight-decay", s.Optimizer.WeightDecay, "L2 weight decay (decoupled for adamw) [yaml: optimizer.weight_decay]")
	fs.Float64Var(&s.Optimizer.Beta1, "beta1", s.Optimizer.Beta1, "adam/adamw beta1 [yaml: optimizer.beta1]")
	fs.Float64Var(&s.Optimizer.Beta2, "beta2", s.Optimizer.Beta2, "adam/adamw beta2 [yaml: optimizer.beta2]")
	fs.Float64Var(&s.Optimizer.Eps, "eps", s.Optimizer.Eps, "optimizer epsilon [yaml: optimizer.eps]")
	fs.Float64Var(&s.Optimizer.Alpha, "alpha", s.Optimizer.Alpha, "rmsprop smoothing constant [yaml: optimizer.alpha]")
	fs.BoolVar(&s.Optimizer.Centered, "centered", s.Optimizer.Centered, "rmsprop centered [yaml: optimizer.centered]")
	fs.Float64Var(&s.Optimizer.LRDecay, "lr-decay", s.Optimizer.LRDecay, "adagrad lr decay [yaml: optimizer.lr_decay]")
	fs.StringVar(&s.Schedule.Name, "schedule", s.Schedule.Name, "none | step | multistep | cosine | onecycle [yaml: schedule.name]")
	fs.IntVar(&s.Schedule.StepSize, "step-size", s.Schedule.StepSize, "step schedule: epochs between decays [yaml: schedule.step_size]")
	fs.Float64Var(&s.Schedule.Gamma, "gamma", s.Schedule.Gamma, "step/multistep decay factor [yaml: schedule.gamma]")
	fs.IntSliceVar(&s.Schedule.Milestones, "milestones", s.Schedule.Milestones, "multistep: epochs at which to decay [yaml: schedule.milestones]")
	fs.Float64Var(&s.Schedule.WarmupEpochs, "warmup-epochs", s.Schedule.WarmupEpochs, "linear warm-up length in epochs [yaml: schedule.warmup_epochs]")
	fs.Float64Var(&s.Schedule.WarmupStart, "warmup-start-factor", s.Schedule.WarmupStart, "warm-up starting factor [yaml: schedule.warmup_start_factor]")
	fs.Float64Var(&s.Schedule.MaxLR, "max-lr", s.Schedule.MaxLR, "onecycle peak lr (0 = lr) [yaml: schedule.max_lr]")
	fs.Float64Var(&s.LabelSmoothing, "label-smoothing", s.LabelSmoothing, "cross-entropy label smoothing [yaml: label_smoothing]")
	fs.Int64Var(&s.Seed, "seed", s.Seed, "seed of initialisation, shuffling and augmentation [yaml: seed]")
	fs.StringVar(&s.BatchNorm, "batch-norm", s.BatchNorm, "average (running stats averaged each step) | sync (SyncBatchNorm) [yaml: batch_norm]")
	fs.IntVar(&s.MinWorkers, "min-workers", s.MinWorkers, "pause below this many workers [yaml: min_workers]")
	fs.IntVar(&s.MaxWorkers, "max-workers", s.MaxWorkers, "never plan more workers than this [yaml: max_workers]")
	fs.StringVar(&s.OutputDir, "output", s.OutputDir, "output directory: history, plots, model, checkpoints [yaml: output_dir]")
	fs.StringVar(&s.Transfer.Weights, "weights", s.Transfer.Weights, "initial weights (safetensors, torchvision names) [yaml: transfer.weights]")
	fs.BoolVar(&s.Transfer.FreezeBackbone, "freeze-backbone", s.Transfer.FreezeBackbone, "train only the classifier head [yaml: transfer.freeze_backbone]")
	fs.IntVar(&s.Checkpoint.EverySteps, "checkpoint-every", s.Checkpoint.EverySteps, "checkpoint every K steps (and at every epoch end; 0 = epoch ends only) [yaml: checkpoint.every_steps]")
	fs.IntVar(&s.Checkpoint.Keep, "checkpoint-keep", s.Checkpoint.Keep, "checkpoints kept (plus the best) [yaml: checkpoint.keep]")
	fs.BoolVar(&s.Checkpoint.Resume, "resume", s.Checkpoint.Resume, "resume from the newest verified checkpoint when one exists [yaml: checkpoint.resume]")
	fs.StringVar(&s.Device, "device", s.Device, "cpu | cuda | auto [yaml: device]")
	fs.StringVar(&s.Precision, "precision", s.Precision, "GPU precision: fp32 | tf32 | bf16 (mixed, fp32 master weights) [yaml: precision]")
	fs.IntVar(&s.Threads, "threads", s.Threads, "compute threads per worker (0 = cores / local workers) [yaml: threads]")
	fs.Float64Var(&s.BucketMB, "bucket-mb", s.BucketMB, "gradient bucket size in MiB [yaml: bucket_mb]")
	fs.StringVar(&s.Compression, "compression", s.Compression, "none | bf16 on the wire [yaml: compression]")
	fs.Float64Var(&s.DeadlineSec, "deadline", s.DeadlineSec, "all-reduce deadline in seconds (a dead or stalled peer is detected within it) [yaml: deadline_sec]")
}

// Resolve builds the effective spec: defaults, then the YAML file at
// configPath (if any), then every flag the user set on fs (bound to
// flagged with BindFlags) — flags win over the file.
func Resolve(fs *pflag.FlagSet, flagged *Spec, configPath string) (Spec, error) {
	if configPath == "" {
		return *flagged, flagged.Validate()
	}
	s := Default()
	if err := s.LoadYAML(configPath); err != nil {
		return s, err
	}
	over := pflag.NewFlagSet("overlay", pflag.ContinueOnError)
	BindFlags(over, &s)
	var err error
	fs.Visit(func(f *pflag.Flag) {
		if over.Lookup(f.Name) == nil || err != nil {
			return
		}
		v := f.Value.String()
		if sv, ok := f.Value.(pflag.SliceValue); ok {
			v = strings.Join(sv.GetSlice(), ",")
		}
		err = over.Set(f.Name, v)
	})
	if err != nil {
		return s, err
	}
	return s, s.Validate()
}
