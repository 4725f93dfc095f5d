//! placeholder until the FreeBSD backend lands
