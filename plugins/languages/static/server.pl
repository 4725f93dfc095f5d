#!/usr/bin/perl
# lj-static-server [DIR]: serves DIR (default: the directory named in .lj-static-root, else .)
# on $PORT (default 8080). GET and HEAD only; no path may leave DIR.
use strict;
use warnings;
use IO::Socket::INET;

my $root = $ARGV[0] // '.';
if (-f "$root/.lj-static-root") {
  open my $f, '<', "$root/.lj-static-root" or die;
  my $sub = <$f>; chomp $sub; close $f;
  $root = "$root/$sub" if $sub =~ m{^[A-Za-z0-9._-]+$};
}
my $port = $ENV{PORT} || 8080;
my %types = (html => 'text/html; charset=utf-8', htm => 'text/html; charset=utf-8', css => 'text/css',
  js => 'text/javascript', json => 'application/json', txt => 'text/plain; charset=utf-8',
  svg => 'image/svg+xml', png => 'image/png', jpg => 'image/jpeg', jpeg => 'image/jpeg',
  gif => 'image/gif', ico => 'image/x-icon', wasm => 'application/wasm', xml => 'application/xml');
$SIG{CHLD} = 'IGNORE';
my $srv = IO::Socket::INET->new(LocalAddr => '0.0.0.0', LocalPort => $port, Listen => 128,
  ReuseAddr => 1, Proto => 'tcp') or die "lj-static-server: cannot listen on $port: $!\n";
$| = 1;
print "lj-static-server: serving $root on port $port\n";

sub reply {
  my ($c, $status, $type, $body, $head) = @_;
  print $c "HTTP/1.0 $status\r\nContent-Type: $type\r\nContent-Length: " . length($body) .
    "\r\nConnection: close\r\n\r\n";
  print $c $body unless $head;
}

while (1) {
  my $c = $srv->accept or next;
  my $pid = fork;
  if (!defined $pid || $pid) { close $c; next; }
  close $srv;
  my $line = <$c> // '';
  while (my $h = <$c>) { last if $h =~ /^\r?\n$/; }
  my ($method, $target) = $line =~ m{^([A-Z]+) (\S+)};
  if (!$method || ($method ne 'GET' && $method ne 'HEAD')) { reply($c, '405 Method Not Allowed', 'text/plain', "method not allowed\n", 0); exit 0; }
  my $head = $method eq 'HEAD';
  (my $path = $target) =~ s/[?#].*//;
  $path =~ s/%([0-9A-Fa-f]{2})/chr(hex($1))/ge;
  if ($path !~ m{^/} || $path =~ m{(^|/)\.\.(/|$)} || $path =~ /\0/) { reply($c, '400 Bad Request', 'text/plain', "bad path\n", $head); exit 0; }
  my $file = "$root$path";
  $file .= 'index.html' if $file =~ m{/$};
  $file .= '/index.html' if -d $file;
  if (-f $file && open(my $fh, '<:raw', $file)) {
    local $/; my $body = <$fh>; close $fh;
    my ($ext) = $file =~ /\.([A-Za-z0-9]+)$/;
    reply($c, '200 OK', $types{lc($ext // '')} // 'application/octet-stream', $body, $head);
  } else {
    reply($c, '404 Not Found', 'text/plain', "not found\n", $head);
  }
  close $c;
  exit 0;
}
