"""The offline demo data sets (`python -m mlic.demo`): posters of MNIST digits and the stand-in pretrained backbone."""
